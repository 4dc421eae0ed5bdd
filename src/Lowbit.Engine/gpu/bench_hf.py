#!/usr/bin/env python3
"""Reference side of gpu/bench.sh: builds a random 7B-shaped Llama (bf16) with Hugging Face transformers, saves it
as safetensors for lowbit-engine, and measures transformers' greedy decode tokens/s at batch 1 on the same weights.

  bench_hf.py make   --out DIR [--layers 32] [--seed 0]
  bench_hf.py decode --model DIR [--prompt-tokens 128] [--new-tokens 128] [--repeats 3] [--batches 1,32]
                     [--cache dynamic|static]   (static: a static cache, which transformers compiles with torch.compile)

Each subcommand prints one JSON line on stdout.
"""
import argparse
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make(args):
    config = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(args.out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"engine": "transformers", "step": "make", "layers": args.layers, "parameters": params,
                      "seconds": round(time.perf_counter() - start, 2)}))


def decode(args):
    start = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda")
    model.eval()
    load_seconds = time.perf_counter() - start
    vocab = model.config.vocab_size
    # The same prompt as lowbit-engine bench-decode: token i = (i*7919 + 13) mod vocab.
    row = [(i * 7919 + 13) % vocab for i in range(args.prompt_tokens)]
    extra = {}
    if args.cache == "static":
        extra["cache_implementation"] = "static"
    for batch in [int(b) for b in args.batches.split(",")]:
        prompt = torch.tensor([row] * batch, device="cuda")
        runs = []
        first = None
        with torch.inference_mode():
            for r in range(args.repeats + 1):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                                     min_new_tokens=args.new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
                                     **extra)
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
                n = (out.shape[1] - prompt.shape[1]) * batch
                if r == 0:
                    first = elapsed
                else:
                    runs.append(n / elapsed)
        print(json.dumps({"engine": "transformers", "mode": "eager" if args.cache == "dynamic" else "static+compile",
                          "batch": batch, "device": "cuda", "dtype": "bfloat16",
                          "layers": model.config.num_hidden_layers, "promptTokens": args.prompt_tokens,
                          "newTokens": args.new_tokens, "loadSeconds": round(load_seconds, 2),
                          "firstRunSeconds": round(first, 2),
                          "tokensPerSecond": round(max(runs), 2), "runs": [round(v, 2) for v in runs],
                          "torch": torch.__version__}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.add_argument("--layers", type=int, default=32)
    m.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("decode")
    d.add_argument("--model", required=True)
    d.add_argument("--prompt-tokens", type=int, default=128)
    d.add_argument("--new-tokens", type=int, default=128)
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--batches", default="1")
    d.add_argument("--cache", choices=["dynamic", "static"], default="dynamic")
    args = parser.parse_args()
    {"make": make, "decode": decode}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
