namespace Lowbit.Operator.Tests.Metrics;

/// <summary>
/// /metrics pages as the runtimes serve them, written from the names, types, labels and buckets of
/// shared/reference/engine-formats.md section 8 (vLLM's loggers.py through prometheus_client; llama.cpp's server with
/// --metrics), not captured from a live server.
/// </summary>
internal static class MetricsPages
{
    /// <summary>
    /// vLLM (prometheus_client text format): <c>_created</c> series beside counters, histograms with <c>le</c>
    /// first, floats written as <c>3.0</c>, process metrics without a prefix. Generated tokens 67890 (two label
    /// sets: 60000 + 7890), TTFT sum 6.5 over 40 requests.
    /// </summary>
    public const string Vllm = """
        # HELP python_gc_objects_collected_total Objects collected during gc
        # TYPE python_gc_objects_collected_total counter
        python_gc_objects_collected_total{generation="0"} 15423.0
        python_gc_objects_collected_total{generation="1"} 3276.0
        # HELP process_resident_memory_bytes Resident memory size in bytes.
        # TYPE process_resident_memory_bytes gauge
        process_resident_memory_bytes 5.312651264e+09
        # HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
        # TYPE vllm:cache_config_info gauge
        vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="False",gpu_memory_utilization="0.9",num_gpu_blocks="27689",num_cpu_blocks="2048",sliding_window="None",swap_space_bytes="4294967296"} 1.0
        # HELP vllm:num_requests_running Number of requests currently running on GPU.
        # TYPE vllm:num_requests_running gauge
        vllm:num_requests_running{model_name="chat"} 3.0
        # HELP vllm:num_requests_waiting Number of requests waiting to be processed.
        # TYPE vllm:num_requests_waiting gauge
        vllm:num_requests_waiting{model_name="chat"} 0.0
        # HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
        # TYPE vllm:gpu_cache_usage_perc gauge
        vllm:gpu_cache_usage_perc{model_name="chat"} 0.0123
        # HELP vllm:prompt_tokens_total Number of prefill tokens processed.
        # TYPE vllm:prompt_tokens_total counter
        vllm:prompt_tokens_total{model_name="chat"} 12345.0
        # HELP vllm:prompt_tokens_created Number of prefill tokens processed.
        # TYPE vllm:prompt_tokens_created gauge
        vllm:prompt_tokens_created{model_name="chat"} 1.7637408e+09
        # HELP vllm:generation_tokens_total Number of generation tokens processed.
        # TYPE vllm:generation_tokens_total counter
        vllm:generation_tokens_total{model_name="chat"} 60000.0
        vllm:generation_tokens_total{model_name="chat-lora"} 7890.0
        # HELP vllm:generation_tokens_created Number of generation tokens processed.
        # TYPE vllm:generation_tokens_created gauge
        vllm:generation_tokens_created{model_name="chat"} 1.7637408e+09
        # HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
        # TYPE vllm:time_to_first_token_seconds histogram
        vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="chat"} 0.0
        vllm:time_to_first_token_seconds_bucket{le="0.005",model_name="chat"} 0.0
        vllm:time_to_first_token_seconds_bucket{le="0.01",model_name="chat"} 0.0
        vllm:time_to_first_token_seconds_bucket{le="0.02",model_name="chat"} 0.0
        vllm:time_to_first_token_seconds_bucket{le="0.04",model_name="chat"} 2.0
        vllm:time_to_first_token_seconds_bucket{le="0.06",model_name="chat"} 5.0
        vllm:time_to_first_token_seconds_bucket{le="0.08",model_name="chat"} 9.0
        vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="chat"} 14.0
        vllm:time_to_first_token_seconds_bucket{le="0.25",model_name="chat"} 31.0
        vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="chat"} 38.0
        vllm:time_to_first_token_seconds_bucket{le="0.75",model_name="chat"} 40.0
        vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="chat"} 40.0
        vllm:time_to_first_token_seconds_bucket{le="2.5",model_name="chat"} 40.0
        vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="chat"} 40.0
        vllm:time_to_first_token_seconds_count{model_name="chat"} 40.0
        vllm:time_to_first_token_seconds_sum{model_name="chat"} 6.5
        # HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
        # TYPE vllm:e2e_request_latency_seconds histogram
        vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="chat"} 0.0
        vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="chat"} 37.0
        vllm:e2e_request_latency_seconds_count{model_name="chat"} 37.0
        vllm:e2e_request_latency_seconds_sum{model_name="chat"} 212.25
        # HELP vllm:request_success_total Count of successfully processed requests.
        # TYPE vllm:request_success_total counter
        vllm:request_success_total{finished_reason="stop",model_name="chat"} 30.0
        vllm:request_success_total{finished_reason="length",model_name="chat"} 7.0

        """;

    /// <summary>llama.cpp's server with <c>--metrics</c>: bare series, no labels, no TTFT histogram. 4096 generated tokens.</summary>
    public const string LlamaCpp = """
        # HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
        # TYPE llamacpp:prompt_tokens_total counter
        llamacpp:prompt_tokens_total 1024
        # HELP llamacpp:prompt_seconds_total Prompt process time
        # TYPE llamacpp:prompt_seconds_total counter
        llamacpp:prompt_seconds_total 0.512
        # HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
        # TYPE llamacpp:tokens_predicted_total counter
        llamacpp:tokens_predicted_total 4096
        # HELP llamacpp:tokens_predicted_seconds_total Predict process time
        # TYPE llamacpp:tokens_predicted_seconds_total counter
        llamacpp:tokens_predicted_seconds_total 81.92
        # HELP llamacpp:n_decode_total Total number of llama_decode() calls
        # TYPE llamacpp:n_decode_total counter
        llamacpp:n_decode_total 4200
        # HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
        # TYPE llamacpp:n_busy_slots_per_decode counter
        llamacpp:n_busy_slots_per_decode 1
        # HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
        # TYPE llamacpp:prompt_tokens_seconds gauge
        llamacpp:prompt_tokens_seconds 2000
        # HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
        # TYPE llamacpp:predicted_tokens_seconds gauge
        llamacpp:predicted_tokens_seconds 50
        # HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
        # TYPE llamacpp:kv_cache_usage_ratio gauge
        llamacpp:kv_cache_usage_ratio 0.25
        # HELP llamacpp:kv_cache_tokens KV-cache tokens.
        # TYPE llamacpp:kv_cache_tokens gauge
        llamacpp:kv_cache_tokens 1024
        # HELP llamacpp:requests_processing Number of request processing.
        # TYPE llamacpp:requests_processing gauge
        llamacpp:requests_processing 1
        # HELP llamacpp:requests_deferred Number of request deferred.
        # TYPE llamacpp:requests_deferred gauge
        llamacpp:requests_deferred 0

        """;
}
