using Lowbit.Engine.Protocol;

namespace Lowbit.Planner;

/// <summary>Memory one device needs, by purpose.</summary>
public sealed record MemoryBreakdown
{
    public required ByteSize Weights { get; init; }

    public required ByteSize KvCache { get; init; }

    public required ByteSize Activations { get; init; }

    public required ByteSize Optimizer { get; init; }

    public required ByteSize Gradients { get; init; }

    /// <summary>What is not a tensor: <see cref="Context"/> + <see cref="AllocatorReserve"/> + <see cref="RuntimeBuffers"/>.</summary>
    public required ByteSize Overhead { get; init; }

    /// <summary>Part of <see cref="Overhead"/>: the CUDA context and library workspaces (cuBLAS/cuBLASLt, cuDNN), or a CPU process.</summary>
    public ByteSize Context { get; init; }

    /// <summary>Part of <see cref="Overhead"/>: memory the caching allocator holds beyond live tensors (rounding, fragmentation).</summary>
    public ByteSize AllocatorReserve { get; init; }

    /// <summary>Part of <see cref="Overhead"/>: runtime buffers outside the tensors counted here (vLLM CUDA graphs, NCCL).</summary>
    public ByteSize RuntimeBuffers { get; init; }

    public ByteSize Total => Weights + KvCache + Activations + Optimizer + Gradients + Overhead;

    /// <summary>Live tensors at the peak: what <c>torch.cuda.max_memory_allocated</c> reports.</summary>
    public ByteSize Allocated => Weights + KvCache + Activations + Optimizer + Gradients;

    /// <summary>What the caching allocator holds at the peak: what <c>torch.cuda.max_memory_reserved</c> reports.</summary>
    public ByteSize Reserved => Allocated + AllocatorReserve;
}

/// <summary>
/// The memory model, per runtime (docs/planner.md has the derivation and the error table against measurements).
/// Everything is per device for one replica spread over <c>devices</c> devices: inference shards weights and KV
/// heads tensor-parallel or splits the layers as a pipeline (<c>pipelineStages</c>);
/// training on several devices is always our engine's pipeline split of the layers (<c>finetune --shards</c>), the
/// heaviest stage per device.
/// </summary>
public static class MemoryEstimator
{
    /// <summary>Headroom kept free on a device (5%) for lowbit, llama.cpp, transformers and training.</summary>
    public const double Headroom = 0.05;

    /// <summary>vLLM's default <c>gpu_memory_utilization</c>: it reserves this fraction and nothing else.</summary>
    public const double VllmGpuMemoryUtilization = 0.90;

    /// <summary>CPU nodes keep 10% of RAM for the OS and page cache.</summary>
    public const double CpuUsableFraction = 0.90;

    /// <summary>
    /// Prompt tokens one prefill forward of lowbit-engine serve processes on a GPU, over all prefilling requests
    /// (<c>--max-num-batched-tokens</c>' CUDA default; the CPU's is <see cref="ServeRequest.CpuMaxNumBatchedTokens"/>).
    /// </summary>
    public const int LowbitPrefillChunk = ServeRequest.CudaMaxNumBatchedTokens;

    /// <summary>Prompt positions whose fp32 log-probabilities lowbit-engine serve computes together (its <c>ServeScheduler.PromptLogprobSlice</c>).</summary>
    public const int LowbitPromptLogprobSlice = 256;

    /// <summary>vLLM <c>max_num_batched_tokens</c> of <c>vllm serve</c> on GPUs under 70 GiB (chunked prefill).</summary>
    public const int VllmPrefillChunk = 2048;

    /// <summary>vLLM <c>max_num_batched_tokens</c> of <c>vllm serve</c> on GPUs of 70 GiB or more.</summary>
    public const int VllmLargeGpuPrefillChunk = 8192;

    /// <summary>llama.cpp <c>n_ubatch</c> default.</summary>
    public const int LlamaCppPrefillChunk = 512;

    /// <summary>vLLM's block size: every sequence's KV cache is a whole number of 16-token blocks.</summary>
    public const int VllmBlockTokens = 16;

    /// <summary>
    /// CUDA context + cuBLAS/cuBLASLt workspaces of a libtorch inference process (lowbit, transformers): NVML's
    /// process memory minus <c>max_memory_reserved</c>, 0.67 GiB in every row of the H200 grid (torch 2.11, CUDA 13;
    /// tests/fixtures/planner-measurements/h200-2026-12-04-calibrate.jsonl).
    /// </summary>
    public static readonly ByteSize TorchContext = ByteSize.FromGiB(0.67);

    /// <summary>
    /// lowbit serve's context: NVML's process memory minus the allocator's reserved peak at ready, 0.81-0.86 GiB over the
    /// six 7B rows of session 12 on the H100 (bf16 and int4; 5 to 40 decode graphs), 1.07 for the 70B int4 (32 graphs of
    /// 80 layers). More than a Python process's <see cref="TorchContext"/>: the native decode libraries' modules and the
    /// graphs' executables.
    /// </summary>
    public static readonly ByteSize LowbitContext = ByteSize.FromGiB(0.85);

    /// <summary>
    /// What loading a packed 4-bit model leaves reserved beyond its tensors, per layer: three tensors per projection
    /// (codes, scales, zeros) placed among freed load-time temporaries leave partly used segments that emptying the cache
    /// cannot return. Serve's "memory before graphs" on the H100: 0.44 GiB over allocated for the 7B (32 layers), 0.96
    /// for the 70B (80 layers).
    /// </summary>
    public static readonly ByteSize LowbitPackedLoadReservePerLayer = ByteSize.FromMiB(14);

    /// <summary>A training process's context: autograd's and the optimizer's workspaces on top (0.74 GiB on the H200 grid).</summary>
    public static readonly ByteSize TorchTrainingContext = ByteSize.FromGiB(0.74);

    /// <summary>
    /// transformers' DynamicCache grows by <c>torch.cat</c> each decode step: the freed, shorter cache blocks rarely
    /// fit the next, longer ones, so the caching allocator ends up holding this fraction of the KV cache again
    /// (fitted on the H200 grid: 0.33–0.98 of the cache, more for larger batches; 0.85 keeps every row within 5% under).
    /// </summary>
    public const double TransformersCacheFragmentation = 0.85;

    /// <summary>
    /// vLLM's non-torch memory per GPU (CUDA context, NCCL, custom all-reduce buffers), as its profiler reports it:
    /// 1.79 GiB at TP 1 and 3.58 GiB at TP 2 for Llama-3-8B on H100 (vllm-project/vllm#10511).
    /// </summary>
    public static readonly ByteSize VllmNonTorch = ByteSize.FromGiB(1.79);

    /// <summary>
    /// lowbit serve's decode graphs beyond their static buffers: the cuBLAS workspace (32 MiB on Hopper, one per stream
    /// that runs a GEMM) of the one stream every graph of a device is captured on, and the one memory pool the graphs
    /// share (a decode step's temporaries, 16 MiB). Session 11 measured the engine before that: a stream from
    /// libtorch's pool per graph and per kernel-selection capture held a workspace each, 0.63 GiB before the decode graphs
    /// and 0.25 GiB more for 28 of them on the H100 (7B bf16, 2,048 × 8: ~32 MiB per stream, up to 33 streams), which is
    /// why those measurements sit ~1 GiB above this model (docs/planner.md).
    /// </summary>
    public static readonly ByteSize LowbitGraphBuffers = ByteSize.FromMiB(48);

    /// <summary>The 16-bit weight slice lowbit's int4 projections dequantize at once (the engine's <c>Int4Weight.DequantizeSliceBytes</c>).</summary>
    public const double LowbitDequantizeSliceBytes = 64 << 20;

    /// <summary>vLLM CUDA graphs for the decode batch sizes it captures (not part of its profiled non-KV memory).</summary>
    public static readonly ByteSize VllmCudaGraphs = ByteSize.FromGiB(0.5);

    /// <summary>llama.cpp's CUDA context and cuBLAS workspace (no libtorch).</summary>
    public static readonly ByteSize LlamaCppContext = ByteSize.FromGiB(0.35);

    /// <summary>A CPU process: runtime, tokenizer, buffers.</summary>
    public static readonly ByteSize CpuProcess = ByteSize.FromGiB(0.5);

    /// <summary>
    /// The estimate's stated margin: the error the model is held to against measurements (tests/fixtures/
    /// planner-measurements): inference ±5%, training and quantization ±10%.
    /// </summary>
    public static double Margin(Workload workload) => workload.Mode == WorkloadMode.Inference ? 0.05 : 0.10;

    /// <summary>The fraction of a device's memory a workload may fill.</summary>
    public static double UsableFraction(Workload workload, DeviceKind kind) => kind switch
    {
        DeviceKind.Cpu => CpuUsableFraction,
        _ when workload.Mode == WorkloadMode.Inference && workload.Runtime == ServingRuntime.Vllm => VllmGpuMemoryUtilization,
        _ => 1 - Headroom,
    };

    public static MemoryBreakdown Estimate(ModelArchitecture model, Workload workload, int devices = 1, DeviceKind kind = DeviceKind.Gpu, ByteSize deviceMemory = default,
        int pipelineStages = 1)
    {
        ArgumentNullException.ThrowIfNull(model);
        var parameters = model.Parameters;
        return Estimate(model, parameters, workload, devices, kind, deviceMemory, pipelineStages);
    }

    /// <summary>
    /// Per device, with the replica's devices split into <paramref name="pipelineStages"/> pipeline stages of
    /// <c>devices / pipelineStages</c> tensor-parallel shards each (inference; 1 = tensor parallel over all). Training
    /// on several devices has one stage per device (the engine's trainer has no tensor parallelism and no sharding):
    /// <paramref name="pipelineStages"/> is then 1 or <paramref name="devices"/>, and either means that split.
    /// </summary>
    internal static MemoryBreakdown Estimate(ModelArchitecture model, in ParameterCounts p, Workload workload, int devices, DeviceKind kind, ByteSize deviceMemory = default,
        int pipelineStages = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(devices, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(pipelineStages, 1);
        if (devices % pipelineStages != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(pipelineStages), pipelineStages, $"must divide the {devices} devices");
        }
        if (workload.IsTraining && pipelineStages != 1 && pipelineStages != devices)
        {
            throw new ArgumentOutOfRangeException(nameof(pipelineStages), pipelineStages, $"training splits its layers over all {devices} devices (finetune --shards {devices})");
        }

        var raw = workload.Mode switch
        {
            WorkloadMode.Inference => Inference(model, p, workload, devices, pipelineStages, kind, deviceMemory),
            WorkloadMode.Quantize => Quantize(model, p, workload),
            _ when devices > 1 => PipelineTraining(model, p, workload, devices),
            WorkloadMode.Full => Full(model, p, workload),
            WorkloadMode.Lora or WorkloadMode.Qlora => Lora(model, p, workload),
            WorkloadMode.LowbitFull => LowbitFull(model, p, workload),
            _ => throw new ArgumentOutOfRangeException(nameof(workload), workload.Mode, "unknown mode"),
        };
        return WithOverhead(raw, model, workload, devices, kind);
    }

    /// <summary>
    /// The tokens a vLLM pool of <paramref name="deviceMemory"/> per GPU holds after weights, activations, non-torch
    /// memory and CUDA graphs: <c>gpu_memory_utilization × memory − (the rest)</c> over the KV bytes per token.
    /// Divide by the context to get the concurrency vLLM logs as "Maximum concurrency".
    /// </summary>
    public static long VllmKvCapacityTokens(ModelArchitecture model, Workload workload, ByteSize deviceMemory, int devices = 1, int pipelineStages = 1)
    {
        ArgumentNullException.ThrowIfNull(model);
        var vllm = workload with { Runtime = ServingRuntime.Vllm, Mode = WorkloadMode.Inference };
        var need = Estimate(model, model.Parameters, vllm, devices, DeviceKind.Gpu, deviceMemory, pipelineStages);
        var pool = (deviceMemory * VllmGpuMemoryUtilization) - (need.Total - need.KvCache);
        var perToken = KvBytesPerToken(model, vllm.KvCache, devices / pipelineStages).Bytes / pipelineStages;
        return pool.Bytes <= 0 ? 0 : (long)(pool.Bytes / perToken);
    }

    /// <summary>
    /// Stored weight bytes of the whole model in a format: block linears at the format's bits (+ per-row
    /// scales), the embedding at the format's embedding precision, an untied head at its head precision (a tied one
    /// has no parameters of its own), norms/biases/router at 16-bit (32-bit in fp32).
    /// </summary>
    public static ByteSize WeightBytes(in ParameterCounts p, WeightFormat format)
    {
        var otherBits = format.LinearBitsPerWeight >= 32 ? 32 : 16;
        return ByteSize.FromBytes(((p.BlockLinear * format.LinearBitsPerWeight)
                                   + (p.BlockLinearRows * format.BitsPerRow)
                                   + (p.Embedding * format.EmbeddingBitsPerWeight)
                                   + (p.Head * format.HeadBitsPerWeight)
                                   + (p.Other * otherBits)) / 8);
    }

    /// <summary>Bytes of KV cache per token on one tensor-parallel shard (KV heads replicate when shards exceed them).</summary>
    public static ByteSize KvBytesPerToken(ModelArchitecture model, KvCacheFormat format, int shards = 1)
    {
        var kvHeadsPerShard = model.KvHeads >= shards ? model.KvHeads / (double)shards : 1;
        var elementBytes = format == KvCacheFormat.Fp8 ? 1 : 2;
        return ByteSize.FromBytes(2.0 * model.Layers * kvHeadsPerShard * model.HeadDim * elementBytes);
    }

    /// <summary>
    /// Serving, per runtime. Weights/N (llama.cpp keeps token_embd on the host); the KV cache the runtime allocates
    /// (lowbit: the max-context × max-concurrency slab; vLLM: context × concurrency in 16-token blocks, the rest of its
    /// pool is more KV; llama.cpp: n_ctx = context × slots; transformers: the dynamic cache plus one layer's copy while
    /// it grows); the activation peak of one prefill forward (<see cref="PrefillTransient"/>) and the logits of the
    /// positions computed (<see cref="LogitsBytes"/>). With <paramref name="stages"/> pipeline stages (vLLM across
    /// nodes) each device holds its stage's share of the layers: weights and KV cache divide by all N devices (KV heads
    /// by the tensor-parallel size, layers by the stages); the activation widths divide by the tensor-parallel size only,
    /// and the logits are counted whole (the last stage computes them).
    /// </summary>
    private static MemoryBreakdown Inference(ModelArchitecture m, in ParameterCounts p, Workload w, int n, int stages, DeviceKind kind, ByteSize deviceMemory)
    {
        var context = (long)w.ContextLength;
        var tensorParallel = n / stages;
        var kvPerToken = KvBytesPerToken(m, w.KvCache, tensorParallel).Bytes / stages;
        var kvTokens = w.Runtime == ServingRuntime.Vllm
            ? (context + VllmBlockTokens - 1) / VllmBlockTokens * VllmBlockTokens * w.Concurrency
            : context * w.Concurrency;
        double kv = kvPerToken * (double)kvTokens;
        var weights = WeightBytes(p, w.Weights).Bytes / (double)n;
        if (w.Runtime == ServingRuntime.Lowbit && stages > 1)
        {
            (weights, kv) = HeaviestStage(m, p, w, kvTokens, stages);
        }
        if (w.Runtime == ServingRuntime.LlamaCpp && kind == DeviceKind.Gpu)
        {
            // llama.cpp keeps the input embedding (token_embd) in host memory even with every layer offloaded.
            weights -= p.Embedding * w.Weights.EmbeddingBitsPerWeight / 8 / n;
        }
        var transient = PrefillTransient(m, w, tensorParallel, kind, deviceMemory) + LogitsBytes(m, w, kind);
        if (w.Runtime == ServingRuntime.Lowbit && kind == DeviceKind.Gpu && !w.Weights.IsHighPrecision)
        {
            // A prefill (and a decode batch over the packed GEMVs) multiplies by 16-bit weights dequantized a slice of
            // rows at a time (Int4Projection.DequantizedLinear). The slice exists during the gate/up projection, before
            // the MLP's product tensor (intermediate × tokens, counted in the peak) does: it adds what it exceeds that by.
            var gateUp = (double)m.IntermediateSize * (m.Mlp == MlpKind.Gated ? 2 : 1);
            var qkv = (double)m.QueryDim + (2.0 * m.KvDim);
            var slice = Math.Min(Math.Max(gateUp, qkv) * m.HiddenSize * 2 / tensorParallel, LowbitDequantizeSliceBytes);
            var product = (double)PrefillTokens(w, deviceMemory, kind) * m.IntermediateSize * m.ExpertsPerToken * 2 / tensorParallel;
            transient += Math.Max(0, slice - product);
        }
        if (w.Runtime == ServingRuntime.Transformers)
        {
            // DynamicCache grows by torch.cat: one layer's old and new cache are alive together.
            transient += kv / m.Layers;
            if (!w.Weights.IsHighPrecision)
            {
                // Quantized linears (bitsandbytes-style) dequantize one weight matrix at a time to 16-bit.
                transient += (double)p.MaxLinearInput * Math.Max(m.HiddenSize, m.QueryDim) * 2 / n;
            }
        }
        return new MemoryBreakdown
        {
            Weights = ByteSize.FromBytes(weights),
            KvCache = ByteSize.FromBytes(kv),
            Activations = ByteSize.FromBytes(transient),
            Optimizer = ByteSize.Zero,
            Gradients = ByteSize.Zero,
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// Our engine's pipeline split (<c>serve --shards</c>, <see cref="PipelineSplit.Balance"/>): each layer costs its
    /// weights (the block's linears, norms and biases, evenly per layer) plus its slice of the KV slab; the embedding
    /// sits on stage 0 and the head on the last (a tied embedding has a copy at both ends). The device that must hold
    /// the most is the heaviest stage: its weights and KV cache.
    /// </summary>
    private static (double Weights, double KvCache) HeaviestStage(ModelArchitecture m, in ParameterCounts p, Workload w, long kvTokens, int stages)
    {
        var all = WeightBytes(p, w.Weights).Bytes;
        var embedding = (long)(p.Embedding * (double)w.Weights.EmbeddingBitsPerWeight / 8);
        var head = m.TiedEmbeddings ? embedding : (long)(p.Head * w.Weights.HeadBitsPerWeight / 8);
        var layerWeights = (all - embedding - (m.TiedEmbeddings ? 0 : head)) / (double)m.Layers;
        var layerKv = KvBytesPerToken(m, w.KvCache).Bytes / m.Layers * kvTokens;
        var perLayer = Enumerable.Repeat((long)(layerWeights + layerKv), m.Layers).ToList();
        var heaviest = PipelineSplit.Balance(perLayer, embedding, head, Math.Min(stages, m.Layers)).MaxBy(s => s.Bytes)!;
        var weights = (heaviest.LayerCount * layerWeights) + (heaviest.HoldsEmbedding ? embedding : 0) + (heaviest.HoldsHead ? head : 0);
        return (weights, heaviest.LayerCount * layerKv);
    }

    /// <summary>The tokens one prefill forward processes on this runtime (see <see cref="Workload.PrefillChunk"/>).</summary>
    public static long PrefillTokens(Workload w, ByteSize deviceMemory = default, DeviceKind kind = DeviceKind.Gpu)
    {
        var inFlight = (long)w.ContextLength * w.Concurrency;
        if (w.PrefillChunk > 0)
        {
            return Math.Min(inFlight, w.PrefillChunk);
        }
        return w.Runtime switch
        {
            // Chunks of several requests in one forward, up to the per-iteration budget.
            ServingRuntime.Lowbit => Math.Min(inFlight, kind == DeviceKind.Cpu ? ServeRequest.CpuMaxNumBatchedTokens : LowbitPrefillChunk),
            ServingRuntime.Vllm => Math.Min(inFlight, deviceMemory.GiB >= 70 ? VllmLargeGpuPrefillChunk : VllmPrefillChunk),
            ServingRuntime.LlamaCpp => Math.Min(inFlight, LlamaCppPrefillChunk),
            // generate() runs the whole padded batch of prompts in one forward.
            _ => inFlight,
        };
    }

    /// <summary>
    /// The activation peak of one prefill forward of T tokens, 16-bit (llama.cpp: fp32 intermediates): per token the
    /// residual, hidden and normed states (3 × hidden) plus the larger of the attention stage (q, k, v and the
    /// attention output) and the MLP stage (gated: gate/up outputs and their product, 3 × intermediate per routed
    /// expert; dense: 2 ×). The lowbit engine expands grouped KV heads to the query heads for its attention over
    /// the whole cached context (repeat_interleave); eager transformers materializes the scores of the prompt.
    /// </summary>
    private static double PrefillTransient(ModelArchitecture m, Workload w, int n, DeviceKind kind, ByteSize deviceMemory)
    {
        double tokens = PrefillTokens(w, deviceMemory, kind);
        var elementBytes = w.Runtime == ServingRuntime.LlamaCpp ? 4.0 : 2.0;
        var perToken = w.Runtime == ServingRuntime.Lowbit
            ? LowbitLayerIntermediates(m, n)
            : (3.0 * m.HiddenSize) + Math.Max((m.QueryDim + (2.0 * m.KvDim) + m.QueryDim) / n, MlpIntermediates(m) / n);
        var peak = tokens * perToken * elementBytes;
        if (w.Runtime == ServingRuntime.Lowbit && m.KvHeads < m.AttentionHeads)
        {
            peak += 2.0 * w.ContextLength * m.QueryDim / n * 2;
        }
        if (w.Runtime == ServingRuntime.Transformers && w.Attention == AttentionKind.Eager)
        {
            // Scores in 16-bit, scaled and masked copies, softmax in fp32 and its 16-bit cast: 10 bytes per score
            // at the peak, one layer at a time (H200 grid: 1B at 2,048 tokens allocates 3.41 GiB).
            peak += (double)w.Concurrency * m.AttentionHeads / n * w.ContextLength * (double)w.ContextLength * 10;
        }
        return peak;
    }

    /// <summary>
    /// Elements per prefill token alive at the end of a layer of lowbit's prefill (FastDecoder.Forward frees a layer's
    /// intermediates only when the layer ends): the fused q/k/v output, the rotated q/k, the attention output, o, the
    /// post-attention normed state, the gate/up output and the activated product, down, and the residual stream and
    /// normed input of both the previous and the next layer (8 × hidden in all). 7B (MHA): 14 × hidden + 3 ×
    /// intermediate, 0.345 GiB at 2,048 tokens; the H100 measured 0.36 (session 12, LOWBIT_WARMUP_MEMORY's "prefill,
    /// last positions' logits" less the 16-bit logits held by then). Freeing q/k/v and the MLP's intermediates once
    /// consumed would take about half of it.
    /// </summary>
    private static double LowbitLayerIntermediates(ModelArchitecture m, int n)
    {
        double q = m.QueryDim, kv = m.KvDim;
        var attention = (q + (2 * kv)) + (q + kv) + q;
        return (attention + MlpIntermediates(m)) / n + (8.0 * m.HiddenSize);
    }

    /// <summary>Elements per token of the MLP's intermediates, every routed expert: gated, the gate/up outputs and their product (3 × intermediate); dense 2 ×.</summary>
    private static double MlpIntermediates(ModelArchitecture m) => (double)m.IntermediateSize * m.ExpertsPerToken * (m.Mlp == MlpKind.Gated ? 3 : 2);

    /// <summary>
    /// Logits of the positions computed. lowbit: one row per decode slot (model dtype plus the sampler's fp32 copy,
    /// 6 B per vocabulary entry) and a prefill whose every position is kept (<c>echo</c> with <c>logprobs</c>: 16-bit
    /// logits of the whole budget, 2 B, then an fp32 copy and log-softmax of 256 positions at a time, 8 B; the serve
    /// warm-up runs that prefill at the full budget before ready, so the peak is reached whether or not clients ask
    /// for prompt log-probabilities); transformers
    /// generate(): the last position of every sequence (6 B); vLLM: its profiling sampler pass over max_num_seqs rows
    /// (bf16 logits, fp32 logits, probabilities and log-probabilities: 14 B); llama.cpp: fp32 outputs of one
    /// micro-batch (n_ubatch × vocab × 4).
    /// </summary>
    private static double LogitsBytes(ModelArchitecture m, Workload w, DeviceKind kind) => w.Runtime switch
    {
        ServingRuntime.Lowbit => ((double)w.Concurrency * m.VocabSize * 6) + ((double)PrefillTokens(w, default, kind) * m.VocabSize * 2)
                                 + ((double)Math.Min(PrefillTokens(w, default, kind), LowbitPromptLogprobSlice) * m.VocabSize * 8),
        ServingRuntime.Vllm => (double)w.Concurrency * m.VocabSize * 14,
        ServingRuntime.LlamaCpp => (double)Math.Min((long)w.ContextLength * w.Concurrency, LlamaCppPrefillChunk) * m.VocabSize * 4,
        _ => (double)w.Concurrency * m.VocabSize * 6,
    };

    /// <summary>
    /// Quantization loads 16-bit weights layer by layer: one layer in 16-bit + the quantized output so far
    /// (the whole model at the end) + calibration activations (inputs and outputs of the current layer for
    /// every sample, 16-bit) + a GPTQ Hessian (fp32, widest input squared) when calibrating.
    /// </summary>
    private static MemoryBreakdown Quantize(ModelArchitecture m, in ParameterCounts p, Workload w)
    {
        var calibration = w.CalibrationSamples > 0
            ? (2.0 * w.CalibrationSamples * w.SequenceLength * m.HiddenSize * 2) + ((double)p.MaxLinearInput * p.MaxLinearInput * 4)
            : 0;
        return new MemoryBreakdown
        {
            Weights = WeightBytes(p, w.Weights) + ByteSize.FromBytes(p.LinearPerLayer * 2.0),
            KvCache = ByteSize.Zero,
            Activations = ByteSize.FromBytes(calibration),
            Optimizer = ByteSize.Zero,
            Gradients = ByteSize.Zero,
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// Full fine-tune on one device, mixed precision: bf16 weights (2 B) + bf16 gradients (2 B) + fp32 master weights
    /// and two AdamW moments (12 B; 8-bit Adam: 4 + 2) = 16 bytes per parameter. fp32 weights: 4 + 4 + 8 (no separate
    /// master). Several GPUs: <see cref="PipelineTraining"/>.
    /// </summary>
    private static MemoryBreakdown Full(ModelArchitecture m, in ParameterCounts p, Workload w)
    {
        var (weightBytes, masterBytes, stateBytes) = FullBytesPerParameter(w);
        var total = (double)p.Total;
        return new MemoryBreakdown
        {
            Weights = ByteSize.FromBytes(total * weightBytes),
            KvCache = ByteSize.Zero,
            Activations = TrainingActivations(m, w),
            Optimizer = ByteSize.FromBytes(total * (masterBytes + stateBytes)),
            Gradients = ByteSize.FromBytes(total * weightBytes),
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>Mode full's bytes per parameter: the weight (and its gradient), the fp32 master copy, the optimizer moments.</summary>
    private static (int Weight, int Master, int State) FullBytesPerParameter(Workload w)
    {
        if (!w.Weights.IsHighPrecision)
        {
            throw new PlanInputException("weights", $"mode full trains 16- or 32-bit weights, not {w.Weights.Name} (use lowbit-full or qlora for quantized weights)", ["bf16", "fp16", "fp32"]);
        }
        var fp32 = w.Weights.LinearBitsPerWeight >= 32;
        return (fp32 ? 4 : 2, fp32 ? 0 : 4, w.EffectiveOptimizer == OptimizerKind.AdamW8Bit ? 2 : 8);
    }

    /// <summary>
    /// LoRA / QLoRA on one device: the frozen base at its format (LoRA: 16-bit; QLoRA: NF4 or intN) + rank-r adapters
    /// on the target linears kept in fp32 (4 B) with fp32 gradients (4 B) and AdamW moments (8 B; 8-bit: 2 B). QLoRA adds
    /// a bf16 buffer for the widest dequantized matrix. Several GPUs: <see cref="PipelineTraining"/>.
    /// </summary>
    private static MemoryBreakdown Lora(ModelArchitecture m, in ParameterCounts p, Workload w)
    {
        var (adapters, stateBytes) = LoraAdapters(m, w);
        return new MemoryBreakdown
        {
            Weights = ByteSize.FromBytes(WeightBytes(p, w.Weights).Bytes + (adapters * 4)),
            KvCache = ByteSize.Zero,
            Activations = TrainingActivations(m, w) + ByteSize.FromBytes(DequantizedMatrix(m, p, w)),
            Optimizer = ByteSize.FromBytes(adapters * stateBytes),
            Gradients = ByteSize.FromBytes(adapters * 4),
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>LoRA/QLoRA: the adapter parameters of the whole model and the optimizer state bytes per adapter parameter.</summary>
    private static (double Adapters, int StateBytes) LoraAdapters(ModelArchitecture m, Workload w)
    {
        if (w.Mode == WorkloadMode.Lora && !w.Weights.IsHighPrecision)
        {
            throw new PlanInputException("weights", $"mode lora trains on a 16-bit base, not {w.Weights.Name} (use qlora for a quantized base)", ["bf16", "fp16", "fp32"]);
        }
        if (w.LoraRank < 1)
        {
            throw new PlanInputException("lora-rank", $"must be at least 1, got {w.LoraRank}");
        }
        return ((double)w.LoraRank * LoraParametersPerRank(m, w.LoraTargets), w.EffectiveOptimizer == OptimizerKind.AdamW8Bit ? 2 : 8);
    }

    /// <summary>QLoRA's one 16-bit dequantized matrix (the widest), alive while a projection runs; none on a 16-bit base.</summary>
    private static double DequantizedMatrix(ModelArchitecture m, in ParameterCounts p, Workload w) =>
        w.Weights.IsHighPrecision ? 0 : WidestMatrix16(m, p);

    /// <summary>The widest block linear in 16-bit: what a quantized weight dequantizes to while its projection runs.</summary>
    private static double WidestMatrix16(ModelArchitecture m, in ParameterCounts p) => (double)p.MaxLinearInput * Math.Max(m.HiddenSize, m.QueryDim) * 2;

    /// <summary>
    /// Low-bit full-parameter training (GaLore / Q-GaLore) on one device: weights stay quantized (default int8) and are
    /// updated in place; block-linear gradients are projected to rank r, so the optimizer keeps two moments of r ×
    /// max(in, out) per matrix (8-bit Adam: 1 B each) and an int4 projector of r × min(in, out); embeddings, head and
    /// norms are trained directly with 8-bit Adam. Updates are applied layer by layer during backward, so only the
    /// largest single gradient (a layer's linears, the embedding or the head) is live at once, in bf16. Several GPUs:
    /// <see cref="PipelineTraining"/>.
    /// </summary>
    private static MemoryBreakdown LowbitFull(ModelArchitecture m, in ParameterCounts p, Workload w)
    {
        var momentBytes = LowbitFullMomentBytes(w);
        var direct = (double)(p.Embedding + p.Head + p.Other);
        var optimizer = ProjectedOptimizerBytes(p, w, momentBytes) + (direct * 2 * momentBytes);
        return new MemoryBreakdown
        {
            Weights = WeightBytes(p, w.Weights),
            KvCache = ByteSize.Zero,
            Activations = TrainingActivations(m, w) + ByteSize.FromBytes(WidestMatrix16(m, p)),
            Optimizer = ByteSize.FromBytes(optimizer),
            Gradients = ByteSize.FromBytes(LargestGradient(p)),
            Overhead = ByteSize.Zero,
        };
    }

    private static double LowbitFullMomentBytes(Workload w)
    {
        if (w.ProjectionRank < 1)
        {
            throw new PlanInputException("projection-rank", $"must be at least 1, got {w.ProjectionRank}");
        }
        return w.EffectiveOptimizer == OptimizerKind.AdamW8Bit ? 1.0 : 4.0;
    }

    /// <summary>lowbit-full's projected moments and int4 projectors of every block linear.</summary>
    private static double ProjectedOptimizerBytes(in ParameterCounts p, Workload w, double momentBytes) =>
        ((double)w.ProjectionRank * p.ProjectedStatePerRank * 2 * momentBytes) + ((double)w.ProjectionRank * p.ProjectorPerRank * 0.5);

    /// <summary>lowbit-full's largest single bf16 gradient: a layer's linears, the embedding or the head.</summary>
    private static double LargestGradient(in ParameterCounts p) => Math.Max(p.LinearPerLayer, Math.Max(p.Embedding, p.Head)) * 2.0;

    /// <summary>
    /// Training on several GPUs of one pod: our engine's <c>finetune --shards N</c> (its <c>TrainingShards</c>), a naive
    /// pipeline (model-parallel) split of the decoder layers, the GPUs working one after another on each micro-batch;
    /// nothing is sharded, so no FSDP all-gather buffer. The split is the engine's: <see cref="PipelineSplit.Balance"/>
    /// over each layer's weights at their format plus its trained parameters × (parameter + gradient + optimizer state
    /// bytes), the embedding (with its trained state in mode full) on stage 0 and the final norm and head on the last;
    /// a tied head stays with the embedding on stage 0, where the logits are then computed. Each stage then also holds
    /// the activations the step keeps for its layers until their backward (with checkpointing each layer's 16-bit input,
    /// without it all the layer saves), the loss's logits where the head is, and what every stage holds whatever its
    /// layers: the layer being recomputed and back-propagated, eager attention's mask, QLoRA's dequantized matrix,
    /// lowbit-full's largest gradient. Per device: the stage that needs the most.
    /// </summary>
    private static MemoryBreakdown PipelineTraining(ModelArchitecture m, in ParameterCounts p, Workload w, int stages)
    {
        var parts = TrainingParts(m, p, w);
        var layers = Enumerable.Repeat((long)parts.Layer.State, m.Layers).ToList();
        var split = PipelineSplit.Balance(layers, (long)parts.EmbeddingEnd.State, (long)parts.HeadEnd.State, Math.Min(stages, m.Layers));
        var stage = split
            .Select(s => (parts.Layer * s.LayerCount) + parts.EveryStage
                         + (s.HoldsEmbedding ? parts.EmbeddingEnd : StagePart.Zero)
                         + (s.HoldsHead ? parts.HeadEnd : StagePart.Zero))
            .MaxBy(s => s.Bytes);
        return new MemoryBreakdown
        {
            Weights = ByteSize.FromBytes(stage.Weights),
            KvCache = ByteSize.Zero,
            Activations = ByteSize.FromBytes(stage.Activations),
            Optimizer = ByteSize.FromBytes(stage.Optimizer),
            Gradients = ByteSize.FromBytes(stage.Gradients),
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>Training bytes by kind, of one decoder layer or one end of a pipeline.</summary>
    private readonly record struct StagePart(double Weights, double Optimizer, double Gradients, double Activations)
    {
        public static readonly StagePart Zero = new(0, 0, 0, 0);

        /// <summary>What the engine's split balances: weights and trained state, no activations.</summary>
        public double State => Weights + Optimizer + Gradients;

        public double Bytes => State + Activations;

        public static StagePart operator +(StagePart a, StagePart b) =>
            new(a.Weights + b.Weights, a.Optimizer + b.Optimizer, a.Gradients + b.Gradients, a.Activations + b.Activations);

        public static StagePart operator *(StagePart a, double count) =>
            new(a.Weights * count, a.Optimizer * count, a.Gradients * count, a.Activations * count);
    }

    /// <summary>A training step's memory by where it sits in a pipeline split (see <see cref="PipelineTraining"/>).</summary>
    private readonly record struct TrainingSplit(StagePart Layer, StagePart EmbeddingEnd, StagePart HeadEnd, StagePart EveryStage);

    private static TrainingSplit TrainingParts(ModelArchitecture m, in ParameterCounts p, Workload w)
    {
        var a = TrainingActivationParts(m, w);
        var layers = (double)m.Layers;
        var saved = new StagePart(0, 0, 0, a.PerLayer);
        var transient = new StagePart(0, 0, 0, a.Recomputed + a.EagerMask);
        // The logits and loss are computed where the head is: the last stage, or the first for a tied head.
        var embeddingLoss = new StagePart(0, 0, 0, m.TiedEmbeddings ? a.Loss : 0);
        var headLoss = new StagePart(0, 0, 0, m.TiedEmbeddings ? 0 : a.Loss);
        // Stored weights at the format: the embedding and an untied head at their precisions, the rest per layer.
        var embeddingBytes = p.Embedding * (double)w.Weights.EmbeddingBitsPerWeight / 8;
        var headBytes = p.Head * w.Weights.HeadBitsPerWeight / 8;
        var layerBytes = (WeightBytes(p, w.Weights).Bytes - embeddingBytes - headBytes) / layers;
        switch (w.Mode)
        {
            case WorkloadMode.Full:
            {
                var (weight, master, state) = FullBytesPerParameter(w);
                var parameter = new StagePart(weight, master + state, weight, 0);
                return new TrainingSplit(
                    (parameter * ((p.Total - p.Embedding - p.Head) / layers)) + saved,
                    (parameter * p.Embedding) + embeddingLoss,
                    (parameter * p.Head) + headLoss,
                    transient);
            }
            case WorkloadMode.Lora or WorkloadMode.Qlora:
            {
                var (adapters, state) = LoraAdapters(m, w);
                var adapter = new StagePart(4, state, 4, 0) * (adapters / layers);
                return new TrainingSplit(
                    new StagePart(layerBytes, 0, 0, 0) + adapter + saved,
                    new StagePart(embeddingBytes, 0, 0, 0) + embeddingLoss,
                    new StagePart(headBytes, 0, 0, 0) + headLoss,
                    transient + new StagePart(0, 0, 0, DequantizedMatrix(m, p, w)));
            }
            case WorkloadMode.LowbitFull:
            {
                var moment = LowbitFullMomentBytes(w);
                var layerOptimizer = (ProjectedOptimizerBytes(p, w, moment) + (p.Other * 2 * moment)) / layers;
                return new TrainingSplit(
                    new StagePart(layerBytes, layerOptimizer, 0, 0) + saved,
                    new StagePart(embeddingBytes, p.Embedding * 2 * moment, 0, 0) + embeddingLoss,
                    new StagePart(headBytes, p.Head * 2 * moment, 0, 0) + headLoss,
                    transient + new StagePart(0, 0, LargestGradient(p), WidestMatrix16(m, p)));
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(w), w.Mode, "not a training mode");
        }
    }

    /// <summary>
    /// Activations saved for backward on one GPU. With gradient checkpointing only each layer's 16-bit input is kept,
    /// plus the recomputed layer, its gradients and the autograd buffers alive across the checkpoint boundary; eager
    /// attention adds the causal mask.
    /// PyTorch autograd for a Hugging Face model in 16-bit (PEFT; <see cref="LayerActivationBytes"/> per layer, 1.5
    /// layers recomputed). Loss: the 16-bit logits, the fp32 log-softmax saved for the loss, its gradient and the input
    /// gradient (14 B per token per vocabulary entry); the final norm and the head input (8 × hidden).
    /// Our engine's LoRA/QLoRA fine-tune (<c>lowbit-engine finetune</c>) saves less: <c>LoraDelta</c> keeps each adapted
    /// input once in 16-bit with a dropout mask and the rank-r product instead of PEFT's float32 copy per projection, so a
    /// layer keeps <see cref="LowbitLayerBytesPerHidden"/> × hidden + <see cref="LowbitLayerBytesPerIntermediate"/> ×
    /// intermediate per token (RMSNorm inputs, q/k/v and the attention output, the adapted inputs; gate, up, their
    /// product and the down input), fitted on the H200 rows of 2026-12-05 (7B at 2,048 tokens: 225.6 KB; 1B at 8,192
    /// tokens: 113.8 KB; tests/fixtures/planner-measurements), with <see cref="LowbitRecomputedLayers"/> layers recomputed
    /// (1.7–1.85 in the same rows); its loss is a chunked cross-entropy over the frozen head that never holds the whole
    /// logits (<see cref="LowbitLossChunkBytes"/> plus a float32 gradient of the head input, 4 × hidden per token).
    /// </summary>
    private static ByteSize TrainingActivations(ModelArchitecture m, Workload w)
    {
        var a = TrainingActivationParts(m, w);
        var stored = (m.Layers * a.PerLayer) + a.Recomputed;
        return ByteSize.FromBytes(stored + a.EagerMask + a.Loss);
    }

    /// <summary>
    /// <see cref="TrainingActivations"/> by where each part lives: what the step keeps for every layer until its
    /// backward (with checkpointing the layer's 16-bit input, without it everything the layer saves), the layers' worth
    /// recomputed and back-propagated at once, eager attention's mask, and the loss (the head's end).
    /// </summary>
    private static (double PerLayer, double Recomputed, double EagerMask, double Loss) TrainingActivationParts(ModelArchitecture m, Workload w)
    {
        var ours = w.Runtime == ServingRuntime.Lowbit && w.Mode is WorkloadMode.Lora or WorkloadMode.Qlora;
        var tokens = (double)w.SequenceLength * w.MicroBatch;
        var layerBytes = tokens * (ours
            ? (LowbitLayerBytesPerHidden * m.HiddenSize) + (LowbitLayerBytesPerIntermediate * (double)m.IntermediateSize * m.ExpertsPerToken)
            : LayerActivationBytes(m, w));
        var perLayer = w.GradientCheckpointing ? tokens * m.HiddenSize * 2 : layerBytes;
        var recomputed = w.GradientCheckpointing ? (ours ? LowbitRecomputedLayers : 1.5) * layerBytes : 0;
        var eagerMask = w.Attention == AttentionKind.Eager ? (double)w.MicroBatch * w.SequenceLength * w.SequenceLength * 2 : 0;
        var loss = ours
            ? LowbitLossChunkBytes + (tokens * m.HiddenSize * 4)
            : (tokens * m.VocabSize * 14) + (tokens * m.HiddenSize * 8);
        return (perLayer, recomputed, eagerMask, loss);
    }

    /// <summary>Our fine-tune's saved bytes per token, layer and unit of hidden size (see <see cref="TrainingActivations"/>).</summary>
    public const double LowbitLayerBytesPerHidden = 34;

    /// <summary>Our fine-tune's saved bytes per token, layer and unit of intermediate size (gate, up, product, down input: 2 B each).</summary>
    public const double LowbitLayerBytesPerIntermediate = 8;

    /// <summary>Layers' worth of activations alive during a checkpointed backward in our fine-tune.</summary>
    public const double LowbitRecomputedLayers = 1.8;

    /// <summary>One vocabulary chunk of the chunked loss: 32 MiB float32 logits, their exp and the 16-bit product (~80 MiB), and the gradient accumulator.</summary>
    public const double LowbitLossChunkBytes = 112.0 * (1 << 20);

    /// <summary>
    /// Bytes one decoder layer saves for backward per token. Autograd saves what each backward needs: a frozen
    /// linear needs no input (only its weight), a trained one does; a product with a constant (rotary cos/sin) saves
    /// only the constant. Trained base (full, lowbit-full): each RMSNorm its fp32 input, 16-bit normalized value and
    /// output (8 × hidden; LayerNorm 4 ×), the o_proj and down_proj inputs (q, intermediate). Frozen base (LoRA,
    /// QLoRA): each RMSNorm its fp32 input (4 × hidden; LayerNorm 2 ×), and every adapted projection its input cast to
    /// fp32 (PEFT casts to the fp32 adapters; q, k and v each keep their own copy). Both: attention q, k and v repeated
    /// to the query heads and its output (8q; eager also the fp32 softmax and its 16-bit cast, 6 B per score), the
    /// gated MLP's gate, activation and up (6 × intermediate per routed expert; dense: 2 ×).
    /// </summary>
    private static double LayerActivationBytes(ModelArchitecture m, Workload w)
    {
        double h = m.HiddenSize;
        double q = m.QueryDim;
        var i = (double)m.IntermediateSize * m.ExpertsPerToken;
        var gated = m.Mlp == MlpKind.Gated;
        var norms = m.ParallelBlock ? 1 : 2;
        var attention = 8 * q;
        var mlp = (gated ? 6 : 2) * i;
        double perToken;
        if (w.Mode is WorkloadMode.Lora or WorkloadMode.Qlora)
        {
            var t = w.LoraTargets;
            var adaptedInputs = (Count(t, LoraTargets.Q | LoraTargets.K | LoraTargets.V) * h)
                                + (t.HasFlag(LoraTargets.O) ? q : 0)
                                + (Count(t, gated ? LoraTargets.Gate | LoraTargets.Up : LoraTargets.Gate) * h * m.ExpertsPerToken)
                                + (t.HasFlag(LoraTargets.Down) ? i : 0);
            perToken = (norms * (m.Norm == NormKind.RmsNorm ? 4 : 2) * h) + attention + mlp + (4 * adaptedInputs);
        }
        else
        {
            perToken = (norms * (m.Norm == NormKind.RmsNorm ? 8 : 4) * h) + (2 * q) + attention + mlp + (2 * i);
        }
        if (w.Attention == AttentionKind.Eager)
        {
            perToken += 6.0 * m.AttentionHeads * w.SequenceLength;
        }
        return perToken;
    }

    private static int Count(LoraTargets targets, LoraTargets mask) => System.Numerics.BitOperations.PopCount((uint)(targets & mask));

    /// <summary>LoRA parameters per unit of rank for the adapted projections: Σ (in + out), all layers and experts.</summary>
    public static long LoraParametersPerRank(ModelArchitecture m, LoraTargets targets)
    {
        long h = m.HiddenSize;
        long q = m.QueryDim;
        long kv = m.KvDim;
        long i = m.IntermediateSize;
        long attention = (targets.HasFlag(LoraTargets.Q) ? h + q : 0)
                         + (targets.HasFlag(LoraTargets.K) ? h + kv : 0)
                         + (targets.HasFlag(LoraTargets.V) ? h + kv : 0)
                         + (targets.HasFlag(LoraTargets.O) ? q + h : 0);
        var gated = m.Mlp == MlpKind.Gated;
        long expert = (targets.HasFlag(LoraTargets.Gate) ? h + i : 0)
                      + (gated && targets.HasFlag(LoraTargets.Up) ? h + i : 0)
                      + (targets.HasFlag(LoraTargets.Down) ? i + h : 0);
        return m.Layers * (attention + (m.Experts * expert));
    }

    /// <summary>
    /// What is not a tensor, per device. Context: a libtorch process (lowbit, transformers, training) 0.55 GiB;
    /// vLLM's profiled non-torch memory 1.79 GiB per GPU, doubled when tensor-parallel (NCCL and all-reduce
    /// buffers), plus 0.5 GiB of CUDA graphs; lowbit serve's decode graphs (<see cref="LowbitGraphBuffers"/>);
    /// llama.cpp 0.35 GiB; a CPU process 0.5 GiB. The caching allocator's
    /// reserve beyond live tensors: serving and quantizing allocate once (64 MiB + 1%); training churns activations
    /// and gradients every step (5% of those, 1% of the weights and optimizer state allocated once). vLLM
    /// pre-allocates its pool, so it has no reserve of its own.
    /// </summary>
    private static MemoryBreakdown WithOverhead(MemoryBreakdown m, ModelArchitecture model, Workload w, int devices, DeviceKind kind)
    {
        var tensors = m.Allocated;
        ByteSize context;
        var reserve = ByteSize.Zero;
        var buffers = ByteSize.Zero;
        if (kind == DeviceKind.Cpu)
        {
            context = CpuProcess;
            reserve = w.IsTraining ? TrainingReserve(m) : ByteSize.Zero;
        }
        else if (w.IsTraining)
        {
            context = TorchTrainingContext;
            reserve = TrainingReserve(m);
        }
        else if (w.Mode == WorkloadMode.Inference && w.Runtime == ServingRuntime.Vllm)
        {
            context = VllmNonTorch;
            buffers = VllmCudaGraphs + (devices > 1 ? VllmNonTorch : ByteSize.Zero);
        }
        else if (w.Mode == WorkloadMode.Inference && w.Runtime == ServingRuntime.LlamaCpp)
        {
            context = LlamaCppContext;
        }
        else
        {
            context = TorchContext;
            reserve = ByteSize.FromMiB(64) + (tensors * 0.01);
            if (w.Mode == WorkloadMode.Inference && w.Runtime == ServingRuntime.Lowbit)
            {
                context = LowbitContext;
                buffers = LowbitGraphBuffers;
                if (!w.Weights.IsHighPrecision)
                {
                    reserve += LowbitPackedLoadReservePerLayer * Math.Ceiling(model.Layers / (double)Math.Max(1, devices));
                }
            }

            if (w.Mode == WorkloadMode.Inference && w.Runtime == ServingRuntime.Transformers)
            {
                reserve += (m.KvCache * TransformersCacheFragmentation) + EagerScoresReserve(model, w, devices);
            }
        }
        return m with
        {
            Overhead = context + reserve + buffers,
            Context = context,
            AllocatorReserve = reserve,
            RuntimeBuffers = buffers,
        };
    }

    /// <summary>
    /// Eager attention's freed score tensors (one layer's 16-bit scores, fp32 softmax and its cast) leave blocks the
    /// allocator keeps: about 4 bytes per score of one layer on the H200 grid (1B and 7B at 2,048 tokens: +0.35 GiB).
    /// </summary>
    private static ByteSize EagerScoresReserve(ModelArchitecture m, Workload w, int devices) =>
        w.Attention == AttentionKind.Eager
            ? ByteSize.FromBytes((double)w.Concurrency * m.AttentionHeads / devices * w.ContextLength * (double)w.ContextLength * 4)
            : ByteSize.Zero;

    private static ByteSize TrainingReserve(MemoryBreakdown m) => ((m.Activations + m.Gradients) * 0.05) + ((m.Weights + m.Optimizer) * 0.01);
}
