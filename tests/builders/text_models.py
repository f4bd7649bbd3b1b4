"""Tiny causal language models for text-generation tests: a random LLaMA-style model and a GPT-2-
style one saved with save_pretrained, each with a small byte-level BPE tokenizer trained here on the
test text (tokenizers), wrapped as PreTrainedTokenizerFast with a simple chat template."""
import json
import os

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "practice makes perfect and patience pays",
    "knowledge is power when it is shared",
    "what is the capital of france? paris is the capital of france.",
    "how many legs does a spider have? a spider has eight legs.",
]

# Renders every conversation as the start of every longer one (what render_chat relies on).
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
# The same with {% generation %} blocks, and a system turn it drops when it is not first
# (so it does not render prefix by prefix): the assistant mask comes from the template.
GENERATION_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|>{% generation %}"
                       "{{ m['content'] }}<|end|>\n{% endgeneration %}{% elif m['role'] == 'system' and "
                       "not loop.first %}{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endif %}"
                       "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")

SPECIALS = ["<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def make_tokenizer(extra_text=(), bos=True, chat_template=CHAT_TEMPLATE, vocab_size=400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(CORPUS) + list(extra_text), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=SPECIALS[2:])
    if chat_template:
        fast.chat_template = chat_template
    return fast


# The other families users train (LLaMA-style blocks with their own twists): Qwen2's qkv biases,
# Mistral's sliding window, Gemma's tied and scaled embeddings, Gemma 2's logit soft cap.
FAMILIES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": False}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"tie_word_embeddings": False, "sliding_window": 512}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 8, "final_logit_softcapping": 5.0,
                                                     "attn_implementation": "eager"}),
}


def make_text_model(folder, kind="llama", seed=0, tokenizer=None, hidden=32, layers=2, vocab_size=None, init=0.2,
                    dtype=None):
    """A random tiny model + tokenizer in `folder` (save_pretrained); returns the folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    tokenizer = tokenizer or make_tokenizer(bos=(kind == "llama"))
    vocab = vocab_size or len(tokenizer)
    # init: the weights' std; 0.2 (not 0.02) gives a 32-wide output layer the room to learn a few sentences
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, initializer_range=init)
    torch.manual_seed(seed)
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=1024, tie_word_embeddings=False, **ids)
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=1024, **ids)
        model = GPT2LMHeadModel(config)
    elif kind in FAMILIES:
        import transformers
        config_cls, model_cls, extra = FAMILIES[kind]
        config = getattr(transformers, config_cls)(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **dict(ids, **extra))
        model = getattr(transformers, model_cls)(config)
    else:
        raise ValueError(kind)
    if dtype is not None:
        model.to(dtype)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def write_jsonl(path, rows):
    """rows: dicts (written as JSON) or strings (written as they are: bad lines)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)
