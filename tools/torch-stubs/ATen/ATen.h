#pragma once
// Declarations only: the subset of libtorch's C++ API that src/Lowbit.Engine/native/lowbit_kernels_v2.cpp uses, so that
// tools/native-cpp-check.sh can type-check it with g++ -fsyntax-only where PyTorch's headers are not installed (the
// GPU bundle compiles it against the real ones on the device). Signatures follow libtorch 2.x; nothing here links.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <stdexcept>

namespace c10 {
enum class ScalarType : int8_t { Byte, Char, Short, Int, Long, Half, Float, Double, Bool, BFloat16 };
std::ostream& operator<<(std::ostream&, ScalarType);
struct Device {
  bool operator==(const Device&) const;
};
std::ostream& operator<<(std::ostream&, const Device&);
class IntArrayRef {
 public:
  IntArrayRef(std::initializer_list<int64_t>);
  bool operator==(const IntArrayRef&) const;
  bool operator!=(const IntArrayRef&) const;
};
std::ostream& operator<<(std::ostream&, const IntArrayRef&);
class TensorOptions {
 public:
  TensorOptions dtype(ScalarType) const;
};
namespace detail {
template <typename... A>
[[noreturn]] void torch_check_fail(const char* condition, const A&... message) {
  std::ostringstream out;
  (out << condition << ... << message);
  throw std::runtime_error(out.str());
}
}  // namespace detail
}  // namespace c10

namespace at {
using c10::ScalarType;
constexpr ScalarType kByte = ScalarType::Byte;
constexpr ScalarType kInt = ScalarType::Int;
constexpr ScalarType kLong = ScalarType::Long;
constexpr ScalarType kHalf = ScalarType::Half;
constexpr ScalarType kFloat = ScalarType::Float;
constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
class Tensor {
 public:
  bool is_cuda() const;
  ScalarType scalar_type() const;
  bool is_contiguous() const;
  int64_t numel() const;
  int64_t dim() const;
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  c10::IntArrayRef sizes() const;
  void* data_ptr() const;
  template <typename T>
  T* data_ptr() const;
  c10::Device device() const;
  c10::TensorOptions options() const;
};
Tensor empty(c10::IntArrayRef size, c10::TensorOptions options = {});
}  // namespace at

#define TORCH_CHECK(condition, ...) \
  do {                              \
    if (!(condition)) ::c10::detail::torch_check_fail(#condition, ##__VA_ARGS__); \
  } while (0)
