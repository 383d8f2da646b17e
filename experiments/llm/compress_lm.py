#!/usr/bin/env python
"""Trial: one-shot prune (Wanda or SparseGPT, a sparsity or 2:4), then weight-only k-bit (RTN or GPTQ), of
the byte-level Llama aup trains on the standard library's source; report the deployed file's perplexity.

The job config holds a two-stage ``compression_pipeline`` (the searched pruner and sparsity, then the
searched quantizer and bits). Both stages calibrate on the same random windows of the training files
(``calibration``); the pipeline prunes first, then quantizes the pruned model. The deployed ONNX file
(4-bit or 8-bit ``MatMulNBits`` on the quantizer's grid) is written to the trial's folder and its own
held-out perplexity is the trial's result (lower is better), with its bytes as ``model_bytes``.
ONNX stores pruned weights densely: sparsity moves the perplexity, the bits move the bytes.

The model is ``lm_data.SPECS[config.get("lm", "llama")]`` (``llama-tiny`` trains in seconds).
"""
import os
import sys
import tempfile

import aup

config = aup.BasicConfig().load(sys.argv[1])

import torch  # noqa: E402

from aup.compression.torch import lm_data  # noqa: E402
from aup.compression.torch.deploy.runtime import load_deployed  # noqa: E402

torch.set_num_threads(1)
name = config.get("lm", "llama")
spec = lm_data.SPECS[name]
model = lm_data.pretrained_lm(name)
held_out = lm_data.corpus_tokens("heldout", max_bytes=int(config.get("heldout_bytes", 16384)))
calibration = lm_data.calibration_batches(spec.context, int(config.get("calibration", 16)), seed=0)

compressor = aup.create_compressor(model, config, calibration=calibration)
compressor.compress()

with tempfile.TemporaryDirectory(prefix="aup-llm-") as scratch:  # the model is kept only when asked
    folder = config["folder_name"] if config.get("save_model") else scratch
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    compressor.export_model(path, format="onnx", dummy_input=calibration[0]["input_ids"][:1])
    perplexity = lm_data.perplexity(load_deployed(path, threads=1), held_out, context=spec.context)
    model_bytes = os.path.getsize(path)
aup.log_metrics(perplexity=perplexity, model_bytes=model_bytes)
print(f"perplexity={perplexity:.4f} model_bytes={model_bytes}")
aup.print_result(perplexity)
