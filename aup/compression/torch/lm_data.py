"""Small causal language models trained here on the standard library's own source, and their perplexity.

No hub is reachable and random weights make every compression method look alike, so aup trains its
own language models: byte-level (vocabulary 256, one token per byte) Llama-style and GPT-2-style
models built from ``transformers`` configs, trained for a few CPU-minutes on the top-level ``.py``
files of the running Python's standard library (``sysconfig.get_paths()["stdlib"]``), a corpus that
ships on every machine with Python. Files are split into train and held-out by a hash of the file
name (deterministic, about a quarter held out), so the held-out perplexity is on unseen modules.

Trained weights are cached under ``$AUP_CACHE`` (default ``~/.cache/aup``) like the digits CNN; a
file lock makes parallel trials wait for one training. The cache name carries the spec, the Python
and torch versions and a digest of the corpus file list, so a different standard library retrains.

:func:`perplexity` is the token-weighted metric (``exp`` of the mean next-token negative
log-likelihood over every scored token), over a sliding window (Hugging Face's recipe): the first
window is ``context`` tokens and scores all of them but the first; every later window moves ``stride``
tokens on and scores only those ``stride`` new tokens, each seeing at least ``context - stride`` tokens of
history. Every token after the first is scored exactly once; a smaller ``stride`` gives more history
and costs ``context / stride`` times the forward passes. Default ``stride = context // 2``.
"""
from __future__ import annotations

import fcntl
import hashlib
import math
import os
import sysconfig
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["LMSpec", "SPECS", "corpus_files", "corpus_tokens", "build_lm", "train_lm", "pretrained_lm",
           "calibration_batches", "perplexity", "cache_dir"]

VOCAB = 256  # one token per byte


@dataclass(frozen=True)
class LMSpec:
    """Architecture and training budget of one small language model."""

    arch: str  # "llama" or "gpt2"
    hidden: int
    layers: int
    heads: int
    intermediate: int
    context: int
    steps: int
    batch: int = 16
    lr: float = 2e-3
    seed: int = 0

    @property
    def key(self) -> str:
        digest = hashlib.sha1(repr(sorted(asdict(self).items())).encode()).hexdigest()[:10]
        return f"{self.arch}_h{self.hidden}_l{self.layers}_s{self.steps}_{digest}"


# "llama"/"gpt2": a few CPU-minutes each (benchmarks, examples); "*-tiny": seconds (tests)
SPECS: dict[str, LMSpec] = {
    "llama": LMSpec("llama", hidden=256, layers=4, heads=4, intermediate=704, context=256, steps=450),
    "gpt2": LMSpec("gpt2", hidden=256, layers=4, heads=4, intermediate=1024, context=256, steps=450),
    "llama-tiny": LMSpec("llama", hidden=64, layers=2, heads=2, intermediate=192, context=64, steps=300, batch=16,
                         lr=5e-3),
    "gpt2-tiny": LMSpec("gpt2", hidden=64, layers=2, heads=2, intermediate=256, context=64, steps=300, batch=16,
                        lr=5e-3),
}


def cache_dir() -> Path:
    """Where trained weights live (``AUP_CACHE`` or ``~/.cache/aup``), as for the digits CNN."""
    return Path(os.environ.get("AUP_CACHE", Path.home() / ".cache" / "aup"))


# ---------------------------------------------------------------------------------------------- corpus
def _held_out(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 4 == 0


def corpus_files(split: str) -> list[Path]:
    """Top-level ``.py`` files of the standard library in ``split`` (``"train"`` or ``"heldout"``), sorted."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split: expected 'train' or 'heldout', got {split!r}")
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    return [p for p in files if _held_out(p.name) == (split == "heldout")]


def _corpus_digest() -> str:
    files = corpus_files("train") + corpus_files("heldout")
    return hashlib.sha1("\n".join(f"{p.name}:{p.stat().st_size}" for p in files).encode()).hexdigest()[:10]


def corpus_tokens(split: str, max_bytes: int | None = None) -> torch.Tensor:
    """The files of ``split`` as one 1-D tensor of byte values (files joined by a blank line)."""
    data = b"\n\n".join(p.read_bytes() for p in corpus_files(split))
    if max_bytes is not None:
        data = data[:max_bytes]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


# ---------------------------------------------------------------------------------------------- models
def build_lm(spec: LMSpec) -> nn.Module:
    """A randomly initialised causal LM of ``spec`` (``transformers``' Llama or GPT-2 from a config)."""
    import transformers

    torch.manual_seed(spec.seed)
    if spec.arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads, num_key_value_heads=spec.heads, intermediate_size=spec.intermediate,
            max_position_embeddings=spec.context, bos_token_id=0, eos_token_id=0, pad_token_id=0,
            tie_word_embeddings=False)
        return transformers.LlamaForCausalLM(config)
    if spec.arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=spec.hidden, n_layer=spec.layers, n_head=spec.heads, n_inner=spec.intermediate,
            n_positions=spec.context, bos_token_id=0, eos_token_id=0, pad_token_id=0, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0)
        return transformers.GPT2LMHeadModel(config)
    raise ValueError(f"arch: expected 'llama' or 'gpt2', got {spec.arch!r}")


def _random_windows(tokens: torch.Tensor, context: int, count: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, tokens.numel() - context, (count,), generator=generator)
    return torch.stack([tokens[s:s + context] for s in starts.tolist()])


def train_lm(spec: LMSpec, log: Callable[[str], None] | None = None) -> nn.Module:
    """Train a fresh model of ``spec`` on the train split (AdamW, linear warm-up, cosine decay)."""
    model = build_lm(spec)
    tokens = corpus_tokens("train")
    generator = torch.Generator().manual_seed(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, spec.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(step, spec.steps) / spec.steps)))
    model.train()
    for step in range(spec.steps):
        batch = _random_windows(tokens, spec.context, spec.batch, generator)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if log is not None and (step % 50 == 0 or step == spec.steps - 1):
            log(f"step {step}/{spec.steps}: loss {loss.item():.3f}")
    return model.eval()


def pretrained_lm(name: str = "llama", seed: int | None = None) -> nn.Module:
    """A model of ``SPECS[name]`` holding cached trained weights (trained here on first use), in eval mode.

    ``seed`` overrides the spec's initialisation/data-order seed (a different model for seed spreads).
    """
    if name not in SPECS:
        raise ValueError(f"unknown language model {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name] if seed is None else replace(SPECS[name], seed=seed)
    version = torch.__version__.split("+")[0]
    path = cache_dir() / f"lm_{spec.key}_seed{spec.seed}_{_corpus_digest()}_torch{version}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains, the others wait and load
        if not path.exists():
            trained = train_lm(spec)
            tmp = path.with_suffix(".tmp")
            torch.save(trained.state_dict(), tmp)
            os.replace(tmp, path)
    model = build_lm(spec)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def calibration_batches(context: int, count: int, seed: int = 0, batch: int = 8,
                        split: str = "train") -> list[dict[str, torch.Tensor]]:
    """``count`` random windows of ``context`` tokens from ``split``, as ``{"input_ids": ...}`` batches
    of ``batch`` rows (the calibration set SparseGPT/GPTQ papers draw: random segments of training text)."""
    generator = torch.Generator().manual_seed(seed)
    windows = _random_windows(corpus_tokens(split), context, count, generator)
    return [{"input_ids": windows[i:i + batch]} for i in range(0, count, batch)]


# ---------------------------------------------------------------------------------------------- metric
def _logits(output: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, an object with ``.logits``, a dict or a tuple/list (first item)."""
    if hasattr(output, "logits"):
        output = output.logits
    elif isinstance(output, dict):
        output = output["logits"]
    elif isinstance(output, (tuple, list)):
        output = output[0]
    return torch.as_tensor(output).float()


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_scored)`` of every window: each scores its last ``n_scored`` tokens, which the
    previous windows did not; together they score tokens ``1 .. n_tokens - 1`` exactly once. The first
    window scores its whole length; each later one ``stride`` new tokens after ``context - stride`` of history."""
    if not 0 < stride < context:
        raise ValueError(f"stride: expected 0 < stride < context ({context}), got {stride}")
    windows: list[tuple[int, int, int]] = []
    scored_to = 1  # token 0 has no history and is never scored
    while scored_to < n_tokens:
        end = min(scored_to + stride if windows else context, n_tokens)
        begin = max(0, end - context)
        windows.append((begin, end, end - scored_to))
        scored_to = end
    return windows


@torch.no_grad()
def perplexity(model: Callable[[torch.Tensor], Any], tokens: torch.Tensor | Sequence[int], context: int,
               stride: int | None = None, batch_size: int = 8) -> float:
    """Token-weighted perplexity of a causal LM on ``tokens`` with a sliding window (module docstring).

    ``model(input_ids)`` may be a torch model (Hugging Face output with ``.logits``) or any callable
    returning logits ``[batch, length, vocab]`` (a deployed ONNX Runtime session from
    ``aup.compression.load_deployed``). ``stride`` defaults to ``context // 2``.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    if tokens.numel() < 2:
        raise ValueError("perplexity needs at least two tokens")
    stride = context // 2 if stride is None else stride
    if isinstance(model, nn.Module):
        model.eval()
    windows = sliding_windows(tokens.numel(), context, stride)
    total_nll, total_scored = 0.0, 0
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for window in windows:  # windows of one length run as one batch
        groups.setdefault(window[1] - window[0], []).append(window)
    for length, group in groups.items():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            ids = torch.stack([tokens[b:e] for b, e, _ in chunk])
            logp = torch.log_softmax(_logits(model(ids))[:, :-1].double(), dim=-1)
            nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # nll[:, t] predicts token t + 1
            for row, (_b, _e, scored) in enumerate(chunk):
                total_nll += float(nll[row, length - 1 - scored:].double().sum())
                total_scored += scored
    return math.exp(total_nll / total_scored)
