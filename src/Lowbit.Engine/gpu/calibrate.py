#!/usr/bin/env python3
"""Peak-memory and decode-speed calibration grid for the planner (issue 15), run by calibrate.sh on a CUDA host.

Needs only the standard library, torch, transformers and peft. Models are random Llama-shaped bf16 models built on the
GPU (no download). For every configuration it records torch.cuda.max_memory_allocated / max_memory_reserved and the
process's peak NVML memory (nvidia-smi polled every 20 ms), one JSON object per line in the planner's fixture schema
(tests/fixtures/planner-measurements/*.jsonl; read by tests/Lowbit.Planner.Tests/CalibrationTests.cs).

  calibrate.py infer --shape 1b|7b --out FILE [--budget SECONDS]
  calibrate.py train --shape 1b|7b --out FILE [--budget SECONDS]
  calibrate.py nvml-peak --pid PID          (prints the peak GiB of PID until it exits; for engine runs)
  calibrate.py table FILE...                (a Markdown table of the JSONL files)
"""
import argparse
import datetime
import json
import subprocess
import sys
import threading
import time

GIB = float(1 << 30)

# Llama shapes (config.json values of TinyLlama-1.1B and Llama-2-7B).
SHAPES = {
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, max_position_embeddings=8192),
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, max_position_embeddings=8192),
}

# (context, batch, attention): the prompt is context - NEW_TOKENS tokens, then NEW_TOKENS are generated.
INFER_GRID = {
    "1b": [(512, 1, "sdpa"), (2048, 8, "sdpa"), (8192, 1, "sdpa"), (2048, 1, "eager"), (4096, 32, "sdpa")],
    "7b": [(512, 1, "sdpa"), (2048, 8, "sdpa"), (4096, 16, "sdpa"), (2048, 1, "eager"), (8192, 2, "sdpa")],
}
# (seq, micro_batch, gradient_checkpointing, attention)
TRAIN_GRID = {
    "1b": [(2048, 4, False, "sdpa"), (2048, 4, True, "sdpa"), (1024, 2, False, "eager")],
    "7b": [(2048, 1, True, "sdpa"), (2048, 1, False, "sdpa"), (4096, 1, True, "sdpa")],
}
NEW_TOKENS = 16
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def gpu_name():
    """GPU 0's name from nvidia-smi (no CUDA context in this process: calibrate_lowbit.py samples others' memory)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        if out:
            return out.splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "no-gpu"


def catalog_gpu():
    """The planner's default-catalog node type for this GPU (decode estimates need its bandwidth), or None."""
    name = gpu_name()
    for key, node in (("H200", "h200-141gb"), ("H100", "h100-80gb"), ("A100-SXM4-80GB", "a100-80gb"),
                      ("A100 80GB", "a100-80gb"), ("A100-SXM4-40GB", "a100-40gb"), ("L4", "l4")):
        if key in name:
            return node
    return None


def used_mib():
    """GPU 0's total used memory (MiB): the fallback when nvidia-smi does not list this container's PIDs."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        return int(out.splitlines()[0]) if out else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# Read before this process creates a CUDA context.
BASELINE_MIB = used_mib()


class NvmlPeak:
    """Polls nvidia-smi for one process's used GPU memory; .peak_gib() is the maximum seen since start()."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                return int(parts[1]) / 1024.0  # MiB -> GiB
        # PID namespaces hide our process from nvidia-smi in some containers: the device's growth since start.
        total = used_mib()
        if total is not None and BASELINE_MIB is not None and total > BASELINE_MIB:
            return (total - BASELINE_MIB) / 1024.0
        return None

    def _run(self):
        while not self._stop.is_set():
            value = self._sample()
            if value is not None and value > self.peak:
                self.peak = value
            self._stop.wait(0.02)

    def start(self):
        self.peak = 0.0
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)
        value = self._sample()
        if value is not None and value > self.peak:
            self.peak = value
        return self.peak


def build(shape, attention):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**SHAPES[shape], rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, attn_implementation=attention)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.config._attn_implementation = attention
    return model


def config_json(model):
    d = model.config.to_dict()
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list)) or v is None}


def reset():
    import gc
    import torch
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def emit(out, record, measures):
    """One line per measure (allocated, reserved, nvml) with the same workload fields."""
    with open(out, "a", encoding="utf-8") as f:
        for measure, value in measures.items():
            if value is None or value <= 0:
                continue
            line = dict(record)
            line["id"] = f"{record['id']}-{measure}"
            line["measure"] = measure
            line["value"] = round(value, 4)
            f.write(json.dumps(line) + "\n")
            print(json.dumps({k: line[k] for k in ("id", "measure", "value")}), flush=True)


def common(shape, model, runtime, mode):
    return {
        "source": f"src/Lowbit.Engine/gpu/calibrate.sh on {gpu_name()} "
                  f"({datetime.date.today().isoformat()}, torch {__import__('torch').__version__}, "
                  f"transformers {__import__('transformers').__version__})",
        "runtime": runtime, "mode": mode, "modelName": f"random-{shape}", "hfConfig": config_json(model),
        "weights": "bf16", "gpu": catalog_gpu(),
    }


def infer(args):
    import torch
    deadline = time.monotonic() + args.budget
    for attention in ("sdpa", "eager"):
        grid = [g for g in INFER_GRID[args.shape] if g[2] == attention]
        if not grid:
            continue
        model = build(args.shape, attention).eval()
        for context, batch, _ in grid:
            if time.monotonic() > deadline:
                print(json.dumps({"skipped": f"{args.shape} infer {context}x{batch}", "why": "time budget"}), flush=True)
                continue
            prompt = context - NEW_TOKENS
            ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device="cuda")
            mask = torch.ones_like(ids)
            reset()
            watch = NvmlPeak(__import__("os").getpid()).start()
            try:
                with torch.inference_mode():
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                         do_sample=False, use_cache=True, pad_token_id=0)
                    torch.cuda.synchronize()
                    seconds = time.perf_counter() - t0
            except torch.cuda.OutOfMemoryError as e:
                watch.stop()
                print(json.dumps({"oom": f"{args.shape} {context}x{batch} {attention}", "error": str(e)[:200]}), flush=True)
                continue
            nvml = watch.stop()
            record = common(args.shape, model, "transformers", "inference")
            record.update({"id": f"cal-transformers-{args.shape}-ctx{context}-b{batch}-{attention}", "context": context,
                           "batch": batch, "attention": attention,
                           "note": f"generate(): {prompt}-token prompts + {NEW_TOKENS} new tokens in {seconds:.2f} s"})
            emit(args.out, record, {"allocated": torch.cuda.max_memory_allocated() / GIB,
                                    "reserved": torch.cuda.max_memory_reserved() / GIB, "nvml": nvml})
            del out
        del model
        reset()
    # Decode speed at batch 1 and 32 (eager generate, 128 prompt + 128 new tokens, as bench.sh).
    model = build(args.shape, "sdpa").eval()
    for batch in (1, 32):
        if time.monotonic() > deadline:
            break
        ids = torch.randint(3, model.config.vocab_size, (batch, 128), device="cuda")
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        record = common(args.shape, model, "transformers", "inference")
        record.update({"id": f"cal-transformers-{args.shape}-decode-b{batch}", "context": 256, "batch": batch,
                       "note": "generate(), 128-token prompt + 128 new tokens, eager, dynamic cache"})
        emit(args.out, record, {"decode-tokens-per-second": batch * 128 / seconds})


def train(args):
    import torch
    from peft import LoraConfig, get_peft_model
    deadline = time.monotonic() + args.budget
    for seq, micro, checkpointing, attention in TRAIN_GRID[args.shape]:
        if time.monotonic() > deadline:
            print(json.dumps({"skipped": f"{args.shape} train {seq}x{micro} ckpt={checkpointing}", "why": "time budget"}), flush=True)
            continue
        model = build(args.shape, attention)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                                 task_type="CAUSAL_LM"))
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        reset()
        watch = NvmlPeak(__import__("os").getpid()).start()
        steps = 3
        try:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for step in range(steps):
                ids = torch.randint(3, model.config.vocab_size, (micro, seq), device="cuda")
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step == 0:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError as e:
            watch.stop()
            print(json.dumps({"oom": f"{args.shape} train {seq}x{micro}", "error": str(e)[:200]}), flush=True)
            del model, optimizer
            reset()
            continue
        nvml = watch.stop()
        record = common(args.shape, model.base_model.model, "transformers", "lora")
        record.update({"id": f"cal-peft-lora-{args.shape}-seq{seq}-mb{micro}-{'ckpt' if checkpointing else 'nockpt'}-{attention}",
                       "seq": seq, "microBatch": micro, "gradientCheckpointing": checkpointing, "attention": attention,
                       "loraRank": 16, "loraTargets": LORA_TARGETS,
                       "note": f"PEFT LoRA (fp32 adapters), AdamW, {(steps - 1) * seq * micro / seconds:.0f} tokens/s"})
        emit(args.out, record, {"allocated": torch.cuda.max_memory_allocated() / GIB,
                                "reserved": torch.cuda.max_memory_reserved() / GIB, "nvml": nvml})
        del model, optimizer, trainable
        reset()


def nvml_peak(args):
    watch = NvmlPeak(args.pid).start()
    while True:
        try:
            __import__("os").kill(args.pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    print(f"{watch.stop():.4f}")


def table(args):
    rows = []
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(l) for l in f if l.strip().startswith("{")]
    print("| id | runtime | mode | measure | value |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "measure" in r:
            print(f"| {r['id']} | {r.get('runtime')} | {r.get('mode')} | {r['measure']} | {r['value']} |")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("infer", "train"):
        p = sub.add_parser(name)
        p.add_argument("--shape", choices=sorted(SHAPES), required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--budget", type=float, default=60)
    p = sub.add_parser("nvml-peak")
    p.add_argument("--pid", type=int, required=True)
    p = sub.add_parser("table")
    p.add_argument("files", nargs="+")
    args = parser.parse_args()
    {"infer": infer, "train": train, "nvml-peak": nvml_peak, "table": table}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
