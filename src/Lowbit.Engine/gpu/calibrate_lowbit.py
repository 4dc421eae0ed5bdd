#!/usr/bin/env python3
"""Our engine's peak GPU memory over a grid, for the planner (issue 15): run by calibrate-lowbit.sh on a CUDA host.

Each point starts the engine as a user would (`run.sh serve ...` or the `bench-finetune` dev verb), samples the
process's used GPU memory with nvidia-smi every 20 ms (NVML; the device's growth when the container hides PIDs), and
writes one fixture line per measure into --out as soon as it is measured (a time-out keeps what was measured before):
  serve:    the point's max-context x max-concurrency slab, graphs captured, warm-up, then max-concurrency requests of
            (max-context - 24) prompt tokens and 8 new tokens at once; measure "nvml" (the peak over the whole run)
  finetune: bench-finetune's own peak (cuMemGetInfo: total - free) as "nvml" after its timed steps
Points run in the order given, most important first, each with a time limit; the grid stops at --budget seconds.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calibrate import NvmlPeak, gpu_name, catalog_gpu  # noqa: E402

# serve's --max-num-batched-tokens, written out (the engine's CUDA default) and recorded as the fixture's prefillChunk,
# so the planner estimates each point with the prefill the engine ran (its warm-up reaches that peak before /ready).
PREFILL_BUDGET = 2048

# cuda; `cpu` only to dry-run the driver on a machine without a GPU (no memory is measured there).
DEVICE = os.environ.get("LOWBIT_CALIBRATE_DEVICE", "cuda")

SHAPES = {
    # TinyLlama-1.1B, Llama-2-7B and Llama-2-13B config.json values.
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32),
    "13b": dict(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40),
    # Llama-2-70B: only as a random 4-bit lowbit artifact written directly (a bf16 copy would not fit the host's disk).
    "70b": dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8),
}

# (kind, shape, weights, a, b[, checkpointing]): serve a=max-context b=max-concurrency; finetune a=seq b=micro-batch.
GRID = [
    ("serve", "7b", "bf16", 2048, 8),
    ("serve", "7b", "int4-g64", 2048, 8),
    ("serve", "7b", "bf16", 512, 1),
    ("serve", "7b", "bf16", 4096, 16),
    ("serve", "7b", "bf16", 16384, 2),
    ("finetune", "7b", "bf16", 2048, 1, False),
    ("finetune", "7b", "bf16", 4096, 1, True),
    ("serve", "1b", "bf16", 2048, 8),
    ("serve", "1b", "bf16", 8192, 4),
    ("serve", "1b", "bf16", 4096, 32),
    ("finetune", "1b", "bf16", 2048, 4, True),
    ("finetune", "1b", "bf16", 2048, 4, False),
    ("serve", "13b", "bf16", 4096, 8),
    ("serve", "70b", "int4-g64", 4096, 8),
    ("finetune", "13b", "bf16", 2048, 1, True),
]


def log(**event):
    print(json.dumps(event), flush=True)


def make_model(shape, work):
    """A random bf16 Llama of the shape, saved as HF safetensors (the 7B reuses the benches' model when present)."""
    folder = os.path.join(work, f"random-{shape}")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    start = time.monotonic()
    bench = os.path.join(os.environ.get("TMPDIR", "/tmp"), "lowbit-bench", "llama7b-32")
    if shape == "7b" and os.path.isfile(os.path.join(bench, "config.json")):
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(bench):
            src = os.path.join(bench, name)
            if os.path.isfile(src):
                os.link(src, os.path.join(folder, name)) if name != "config.json" else shutil.copy(src, folder)
        log(event="calibrate-model", shape=shape, reused=bench)
        return folder
    # In a child process: this one must hold no CUDA context while it samples the engine's memory.
    subprocess.run([sys.executable, os.path.abspath(__file__), "make", "--shape", shape, "--dir", folder],
                   check=True, timeout=240)
    log(event="calibrate-model", shape=shape, seconds=round(time.monotonic() - start, 1))
    return folder


def make_lowbit(shape, group, folder):
    """A random 4-bit lowbit artifact in LowbitCheckpoint.Write's layout (random codes, fp16 scales and zeros, bf16
    embeddings, norms and lm_head), written without a 16-bit model: what serve loads for a shape too big to quantize here."""
    import torch
    from safetensors.torch import save_file
    c = SHAPES[shape]
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    d = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * d
    projections = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
                   "self_attn.o_proj": (h, h), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
                   "mlp.down_proj": (h, inter)}
    torch.manual_seed(0)
    tensors, meta = {}, {}
    # One random draw per projection shape, copied per layer (a copy is ~10x faster than drawing 35 GB for a 70B;
    # safetensors refuses tensors that share storage, so each layer gets its own copy).
    codes = {shape: torch.randint(0, 256, (shape[0] * shape[1] // 2,), dtype=torch.uint8) for shape in set(projections.values())}
    for i in range(layers):
        for name, (rows, cols) in projections.items():
            prefix = f"model.layers.{i}.{name}"
            tensors[prefix + ".qweight"] = codes[(rows, cols)].clone()
            tensors[prefix + ".scales"] = torch.full((rows, cols // group), 0.002, dtype=torch.float16)
            tensors[prefix + ".zeros"] = torch.full((rows, cols // group), 7.5, dtype=torch.float16)
            meta[prefix] = {"method": "hqq", "bits": 4, "group_size": group, "axis": 1, "shape": [rows, cols]}
        tensors[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    tensors["model.embed_tokens.weight"] = (torch.randn(c["vocab_size"], h) * 0.02).to(torch.bfloat16)
    tensors["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    tensors["lm_head.weight"] = (torch.randn(c["vocab_size"], h) * 0.02).to(torch.bfloat16)
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"),
              metadata={"format": "lowbit", "lowbit.version": "1", "lowbit.layers": json.dumps(meta)})
    config = dict(c, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", head_dim=d,
                  max_position_embeddings=16384, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16",
                  quantization_config={"quant_method": "lowbit", "method": "hqq", "bits": 4, "group_size": group,
                                       "bits_per_weight": 4 + 32 / group})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def make(shape, folder):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=16384, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(folder, safe_serialization=True)


def quantize(engine, model, work, limit):
    out = os.path.join(work, os.path.basename(model) + "-hqq4")
    bench = os.path.join(os.environ.get("TMPDIR", "/tmp"), "lowbit-bench", "llama7b-32-hqq4")
    for candidate in (out, bench):
        if os.path.isfile(os.path.join(candidate, "lowbit", "config.json")):
            return os.path.join(candidate, "lowbit")
    subprocess.run([os.path.join(engine, "run.sh"), "quantize", "--model", model, "--method", "hqq", "--bits", "4",
                    "--group-size", "64", "--format", "lowbit", "--out", out, "--device", DEVICE],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=limit, check=True)
    return os.path.join(out, "lowbit")


def hf_config(model):
    with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def emit(out, record):
    if record["value"] <= 0:
        log(event="calibrate-no-measure", id=record["id"], why="no GPU memory sampled (nvidia-smi missing or no GPU)")
        return
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    log(event="calibrate-row", id=record["id"], value=record["value"])


def serve_point(engine, model, context, concurrency, port, limit, vocab):
    """Peak GPU GiB of `serve` at this slab after max-concurrency full-context requests; 0 when it failed."""
    cmd = [os.path.join(engine, "run.sh"), "serve", "--model", model, "--device", DEVICE, "--port", str(port),
           "--max-context", str(context), "--max-concurrency", str(concurrency), "--max-num-batched-tokens", str(PREFILL_BUDGET),
           "--served-name", "cal"]
    # stdout (the JSON log: memory before graphs, after load, at ready) and stderr to a file, not a pipe nobody reads
    # while it runs (a full pipe would block the server's logging).
    err = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lowbit-calibrate-serve-{port}.log"), "w+", encoding="utf-8")
    # LOWBIT_WARMUP_MEMORY=1: the allocator's peak per part of the warm-up (prefill, prompt log-probabilities, decode
    # step, sampler) in the log, for the planner's activation and logits terms.
    proc = subprocess.Popen(cmd, stdout=err, stderr=err, text=True, start_new_session=True,
                            env=dict(os.environ, LOWBIT_WARMUP_MEMORY="1"))
    watch = NvmlPeak(proc.pid).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err.seek(0)
                raise RuntimeError(f"serve exited {proc.returncode}: {err.read()[-300:]}")
            try:
                if urllib.request.urlopen(base + "/ready", timeout=2).status == 200:
                    break
            except Exception:
                time.sleep(0.25)
        else:
            raise TimeoutError("serve not ready")
        ready_peak = watch.peak
        prompt = [(i * 7919) % (vocab - 10) + 5 for i in range(context - 24)]
        errors = []

        def ask():
            body = json.dumps({"model": "cal", "prompt": prompt, "max_tokens": 8, "temperature": 0}).encode()
            try:
                urllib.request.urlopen(urllib.request.Request(base + "/v1/completions", body,
                                                              {"Content-Type": "application/json"}),
                                       timeout=max(5.0, deadline - time.monotonic())).read()
            except Exception as e:  # noqa: BLE001 - recorded, the point is then dropped
                errors.append(str(e)[:200])
        threads = [threading.Thread(target=ask) for _ in range(concurrency)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if errors:
            raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
        time.sleep(0.3)
        err.seek(0)
        # The engine's own allocator reports (CudaMemory: live vs cached, when liblowbit_memory.so built): before the
        # decode graphs, after them (load), at ready; JSON log lines, keyed by their label.
        allocator = {}
        for line in err.read().splitlines():
            for label, key in (("memory before graphs:", "engineMemoryBeforeGraphs"), ("memory after load:", "engineMemoryAfterLoad"),
                               ("memory at ready:", "engineMemoryAtReady"), ("warm-up memory", "engineWarmUpMemory")):
                if label in line and key not in allocator:
                    try:
                        allocator[key] = json.loads(line).get("message", line) if line.startswith("{") else line
                    except ValueError:
                        allocator[key] = line
        return watch.stop(), ready_peak, allocator
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        watch.stop()
        err.close()


def finetune_point(engine, model, method, seq, micro, checkpointing, limit):
    cmd = [os.path.join(engine, "run.sh"), "bench-finetune", "--model", model, "--method", method, "--steps", "3",
           "--warmup", "1", "--seq-length", str(seq), "--micro-batch", str(micro), "--r", "16", "--device", DEVICE,
           "--gradient-checkpointing", "true" if checkpointing else "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = NvmlPeak(proc.pid).start()
    try:
        out, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            proc.kill()
        nvml = watch.stop()
    line = next((json.loads(l) for l in out.splitlines() if l.startswith("{") and "peakDeviceUsedBytes" in l), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"bench-finetune exited {proc.returncode}: {err[-300:]}")
    return line["peakDeviceUsedBytes"] / float(1 << 30), nvml, line.get("tokensPerSecond")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "make":
        m = argparse.ArgumentParser()
        m.add_argument("--shape", choices=sorted(SHAPES), required=True)
        m.add_argument("--dir", required=True)
        m.add_argument("--lowbit-group", type=int, default=0)
        a = m.parse_args(sys.argv[2:])
        if a.lowbit_group:
            make_lowbit(a.shape, a.lowbit_group, a.dir)
        else:
            make(a.shape, a.dir)
        return
    p = argparse.ArgumentParser()
    p.add_argument("--engine", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "lowbit-calibrate-work"))
    p.add_argument("--budget", type=float, default=540)
    p.add_argument("--only", default="", help="comma-separated point indexes of GRID to run")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    start = time.monotonic()
    source = f"src/Lowbit.Engine/gpu/calibrate-lowbit.sh on {gpu_name()} ({datetime.date.today().isoformat()})"
    gpu = catalog_gpu()
    only = {int(i) for i in args.only.split(",") if i.strip()}
    port = 18950
    # run.sh builds the native decode library on first use (a minute or more with nvcc): build it now, so that the
    # first point's quantize or serve limit is not spent on it (session 11's 7B int4 quantize timed out at 120 s so).
    built = time.monotonic()
    subprocess.run([os.path.join(args.engine, "run.sh"), "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=max(30, args.budget / 2), check=False)
    log(event="calibrate-native-build", seconds=round(time.monotonic() - built, 1))
    for index, point in enumerate(GRID):
        if only and index not in only:
            continue
        left = args.budget - (time.monotonic() - start)
        if left < 25:
            log(event="calibrate-skip", point=list(point), why="out of time budget")
            continue
        kind, shape, weights, a, b = point[:5]
        port += 1
        try:
            if shape == "70b":
                model = os.path.join(args.work, f"random-{shape}-{weights}")
                if not os.path.isfile(os.path.join(model, "config.json")):
                    made = time.monotonic()
                    subprocess.run([sys.executable, os.path.abspath(__file__), "make", "--shape", shape, "--dir", model,
                                    "--lowbit-group", weights.split("-g")[1]], check=True, timeout=max(30, left - 60))
                    log(event="calibrate-model", shape=shape, weights=weights, seconds=round(time.monotonic() - made, 1))
            else:
                model = make_model(shape, args.work)
            if weights != "bf16" and shape != "70b":
                model = quantize(args.engine, model, args.work, min(120, left))
            base = {"source": source, "runtime": "lowbit", "modelName": f"random-{shape}", "hfConfig": hf_config(model),
                    "weights": weights, "gpu": gpu}
            if weights.startswith("int4-g"):
                base["weights"], base["groupSize"] = "int4", int(weights.split("-g")[1])
            if kind == "serve":
                peak, ready, allocator = serve_point(args.engine, model, a, b, port, min(150, left), base["hfConfig"]["vocab_size"])
                name = f"cal-lowbit-serve-{shape}-{weights}-ctx{a}-b{b}"
                emit(args.out, dict(base, id=f"{name}-nvml", mode="inference", context=a, batch=b, prefillChunk=PREFILL_BUDGET, measure="nvml",
                                    value=round(peak, 4), readyPeakGiB=round(ready, 4),
                                    **allocator))
            else:
                checkpointing = point[5]
                method = "lora" if weights == "bf16" else "qlora"
                peak, nvml, tps = finetune_point(args.engine, model, method, a, b, checkpointing, min(180, left))
                name = f"cal-lowbit-{method}-{shape}-seq{a}-mb{b}{'-ckpt' if checkpointing else ''}"
                emit(args.out, dict(base, id=f"{name}-nvml", mode=method, seq=a, microBatch=b, loraRank=16,
                                    gradientCheckpointing=checkpointing, attention="sdpa", measure="nvml",
                                    value=round(max(peak, nvml), 4), engineReportGiB=round(peak, 4),
                                    tokensPerSecond=tps))
        except Exception as e:  # noqa: BLE001 - one failed point does not end the grid
            log(event="calibrate-point-failed", point=list(point), error=str(e)[:400])
        log(event="calibrate-progress", done=index + 1, of=len(GRID), elapsedSeconds=round(time.monotonic() - start))


if __name__ == "__main__":
    main()
