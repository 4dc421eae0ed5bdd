#!/usr/bin/env python3
"""Reference side of gpu/bench-finetune.sh: Hugging Face transformers + PEFT LoRA fine-tuning throughput and memory
on the random 7B-shaped Llama that `bench_hf.py make` writes.

  bench_hf_finetune.py --model DIR [--steps 12] [--warmup 2] [--seq-length 2048] [--r 16] [--gradient-checkpointing true|false]

Setup (the issue's anchor): bf16 weights, SDPA attention, LoRA r=16 / alpha 32 / dropout 0.05 on all seven
projections (PEFT defaults otherwise: adapters upcast to float32), gradient checkpointing (non-reentrant; the
issue's 8,833 tokens/s at 30.6 GiB is this script's run *without* it, 8,817 tokens/s at 30.58 GiB allocated),
micro-batch 1, torch.optim.AdamW (lr 2e-4), grad-norm clipping at 1.0, random token ids as inputs and labels.
tokens/s is timed over the steps after the warm-up, each step ending with loss.item() (as lowbit-engine's loop).
Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--gradient-checkpointing", choices=["true", "false"], default="true")
    args = parser.parse_args()
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        print(json.dumps({"engine": "transformers+peft", "bench": "finetune", "error": "peft is not installed (pip install peft)"}))
        return 0

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa")
    model.config.use_cache = False
    checkpointing = args.gradient_checkpointing == "true"
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(1234)
    batches = [torch.randint(3, vocab, (1, args.seq_length), generator=generator).cuda() for _ in range(args.steps)]
    free, total = torch.cuda.mem_get_info()
    peak_used = total - free
    marks = []
    losses = []
    for step, ids in enumerate(batches, start=1):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        marks.append(time.perf_counter())
        free, total = torch.cuda.mem_get_info()
        peak_used = max(peak_used, total - free)
    timed = args.steps - args.warmup
    seconds = marks[-1] - marks[args.warmup - 1]
    gib = 1 << 30
    print(json.dumps({
        "engine": "transformers+peft", "bench": "finetune", "method": "lora", "device": "cuda",
        "layers": model.config.num_hidden_layers, "seqLength": args.seq_length, "microBatch": 1, "r": args.r,
        "targets": 7, "gradientCheckpointing": checkpointing, "timedSteps": timed,
        "tokensPerSecond": round(timed * args.seq_length / seconds, 1),
        "peakAllocatedGiB": round(torch.cuda.max_memory_allocated() / gib, 2),
        "peakReservedGiB": round(torch.cuda.max_memory_reserved() / gib, 2),
        "peakDeviceUsedGiB": round(peak_used / gib, 2),
        "trainableParameters": sum(p.numel() for p in trainable),
        "allocatorConfig": os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or os.environ.get("PYTORCH_ALLOC_CONF") or "(default)",
        "firstLoss": round(losses[0], 4), "lastLoss": round(losses[-1], 4),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
