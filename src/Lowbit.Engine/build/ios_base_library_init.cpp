// Supplies std::ios_base_library_init() (GLIBCXX_3.4.32, GCC 13) for hosts whose libstdc++ is older
// (Debian 12 stops at GLIBCXX_3.4.30). GCC 13 headers make every user of <iostream> reference this function
// instead of defining a static std::ios_base::Init per translation unit; here it constructs one Init object so
// the standard streams are initialized, exactly what GCC 12's <iostream> did per TU. See fix-libstdcxx.sh.
#include <ios>

namespace std {
void ios_base_library_init() {
    static ios_base::Init init;
}
}

static std::ios_base::Init lowbit_ios_init;
