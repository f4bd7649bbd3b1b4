"""BLIP captions (a sentence per image) with transformers' BlipForConditionalGeneration.

A model is a local transformers folder, as `huggingface-cli download Salesforce/blip-image-captioning-base`
leaves it: config.json, model.safetensors (or pytorch_model.bin), preprocessor_config.json and the
BERT tokenizer (tokenizer.json or vocab.txt, tokenizer_config.json). The pixels come from the C core
(`_native.prepare_images` with the folder's preprocessor settings); the tokenizer only decodes.
transformers 5 removed the image-to-text pipeline, so `generate` is called directly.
"""
import sys

import numpy as np

from . import models

NAME = "blip"
TITLE = "BLIP"
STYLE = "sentence"   # captions are sentences: the report counts words, a prefix is joined with a space
EXPECTED = ("a transformers BLIP folder: config.json, model.safetensors (or pytorch_model.bin), "
            "preprocessor_config.json and the tokenizer (tokenizer.json or vocab.txt, with tokenizer_config.json)")
HOW_TO_GET = ("huggingface-cli download Salesforce/blip-image-captioning-base --local-dir "
              "models/captioners/blip/blip-image-captioning-base (or Salesforce/blip-image-captioning-large; "
              "newer huggingface_hub calls the command `hf download`)")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.txt",))
# option -> default; `prompt`: text the caption continues (conditional captioning, e.g. "a picture of")
OPTIONS = {"max_new_tokens": 30, "num_beams": 3, "prompt": ""}


def locate(path):
    problem = models.hf_folder_problem(path, TOKENIZER_FILES)
    if problem:
        raise models.incomplete_error(sys.modules[__name__], path, problem)
    return path


def candidates(base):
    return models.subfolders(base)


class BlipCaptioner:
    name = NAME
    style = STYLE

    def __init__(self, path, device=None, dtype=None, max_new_tokens=30, num_beams=3, prompt=""):
        import torch
        from transformers import AutoTokenizer, BlipForConditionalGeneration

        if int(max_new_tokens) < 1 or int(num_beams) < 1:
            from ..errors import UsageError
            raise UsageError("max_new_tokens and num_beams must be at least 1")
        self.path = locate(path)
        self.prep = models.prep_spec(self.path)
        self.device = models.torch_device(device)
        self.on_cpu = self.device == "cpu"
        self.torch_model = True
        self.dtype = models.torch_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = BlipForConditionalGeneration.from_pretrained(self.path, local_files_only=True,
                                                                  dtype=self.dtype).to(self.device).eval()
        self.generate_kwargs = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams)}
        self.prompt_ids = None
        if prompt:
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids
            self.prompt_ids = ids.to(self.device)
        self._torch = torch

    def caption(self, pixels):
        """float32 [n, 3, h, w] prepared pixels -> n captions."""
        torch = self._torch
        with torch.inference_mode():
            px = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, self.dtype)
            kwargs = dict(self.generate_kwargs)
            if self.prompt_ids is not None:
                kwargs["input_ids"] = self.prompt_ids.repeat(px.shape[0], 1)
            out = self.model.generate(pixel_values=px, **kwargs)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def close(self):
        self.model = None


def load(path, device=None, dtype=None, **options):
    return BlipCaptioner(path, device=device, dtype=dtype, **options)


__all__ = ["BlipCaptioner", "load", "locate", "OPTIONS", "NAME"]
