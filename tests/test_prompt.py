"""`<lora:...>` prompt tags: the forms A1111 reads, the text that is left, and odd input."""
import pytest

from lora_native.prompt import LoraTag, parse, resolve

# (prompt, text left for the encoder, [(name, unet, te)], number of warnings)
CASES = [
    ("a cat", "a cat", [], 0),
    ("", "", [], 0),
    ("<lora:x:0.8>", "", [("x", 0.8, 0.8)], 0),
    ("a cat <lora:x:0.8>", "a cat", [("x", 0.8, 0.8)], 0),
    ("<lora:x:0.8> a cat", "a cat", [("x", 0.8, 0.8)], 0),
    ("a cat, <lora:x:1>, b", "a cat, b", [("x", 1.0, 1.0)], 0),
    ("a cat,<lora:x:1>,b", "a cat,b", [("x", 1.0, 1.0)], 0),
    ("a cat, <lora:x:1>", "a cat", [("x", 1.0, 1.0)], 0),
    ("<lora:x>", "", [("x", 1.0, 1.0)], 0),
    ("a <lora:my style:0.5> b", "a b", [("my style", 0.5, 0.5)], 0),
    ("<lora:styles/my style:0.7> b", "b", [("styles/my style", 0.7, 0.7)], 0),
    # positional order as A1111 reads it: te first, then unet
    ("<lora:x:0.4:0.6>", "", [("x", 0.6, 0.4)], 0),
    ("<lora:x:1:te=0.2>", "", [("x", 1.0, 0.2)], 0),
    ("<lora:x:unet=0.3>", "", [("x", 0.3, 1.0)], 0),
    ("<lora:x:te=0.5:unet=0.25>", "", [("x", 0.25, 0.5)], 0),
    ("<lora:x:-0.5>", "", [("x", -0.5, -0.5)], 0),
    ("<lora:x: 0.5 >", "", [("x", 0.5, 0.5)], 0),
    ("<lora:x:0.5> <lora:x:0.25>", "", [("x", 0.75, 0.75)], 0),
    ("<lora:a:1> mid <lora:b:0.5>", "mid", [("a", 1.0, 1.0), ("b", 0.5, 0.5)], 0),
    ("<LORA:x:0.5>", "", [("x", 0.5, 0.5)], 0),
    ("(red:1.2), <lora:x:1>", "(red:1.2)", [("x", 1.0, 1.0)], 0),
    ("line one <lora:x:1>\nline two", "line one\nline two", [("x", 1.0, 1.0)], 0),
    ("<hypernet:h:1> a", "<hypernet:h:1> a", [], 0),
    # malformed: left in the text, a warning, never an exception
    ("a <lora:x:abc> b", "a <lora:x:abc> b", [], 1),
    ("a <lora:> b", "a <lora:> b", [], 1),
    ("<lora::0.5>", "<lora::0.5>", [], 1),
    ("<lora:x:1:2:3>", "<lora:x:1:2:3>", [], 1),
    ("a <lora:x:0.5", "a <lora:x:0.5", [], 1),
    ("<lora:x:0.5 <lora:y:1>", "<lora:x:0.5", [("y", 1.0, 1.0)], 1),
    ("<lora:x:nan>", "<lora:x:nan>", [], 1),
    ("<lora:x:inf>", "<lora:x:inf>", [], 1),
    ("<lora:x:>", "<lora:x:>", [], 1),
    ("<lora:x:dyn=4>", "<lora:x:dyn=4>", [], 1),
    ("<lora:x:te=oops>", "<lora:x:te=oops>", [], 1),
]


@pytest.mark.parametrize("prompt,text,loras,n_warnings", CASES)
def test_parse_table(prompt, text, loras, n_warnings):
    got = parse(prompt)
    assert got.text == text
    assert [(t.name, t.unet, t.te) for t in got.loras] == [(n, pytest.approx(u), pytest.approx(e)) for n, u, e in loras]
    assert len(got.warnings) == n_warnings, got.warnings


def test_parse_never_raises_on_odd_input():
    for text in (None, "<", ">", "<lora:", "<lora:>>", "<<lora:x:1>>", "<lora:x:1e999>", ":::", "<lora:\n:1>"):
        parse(text)


def test_te_defaults_to_unet():
    assert LoraTag("x", 0.3).te == 0.3


AVAILABLE = ["style.safetensors", "styles/my style.safetensors", "Char.safetensors", "sub/char_v2.pt",
             "dup/same.safetensors", "other/same.safetensors"]


@pytest.mark.parametrize("name,entry", [
    ("style", "style.safetensors"),
    ("styles/my style", "styles/my style.safetensors"),
    ("my style", "styles/my style.safetensors"),
    ("Char", "Char.safetensors"),
    ("char", "Char.safetensors"),
    ("char_v2", "sub/char_v2.pt"),
    ("sub/char_v2", "sub/char_v2.pt"),
    ("style.safetensors", "style.safetensors"),
    ("styles\\my style", "styles/my style.safetensors"),
])
def test_resolve_by_stem_or_relative_path(name, entry):
    found, warnings = resolve([LoraTag(name, 0.5, 0.25)], AVAILABLE)
    assert found == [(name, entry, 0.5, 0.25)]
    assert warnings == []


def test_resolve_prefers_exact_case():
    found, _ = resolve([LoraTag("style")], ["Style.safetensors", "style.safetensors"])
    assert found[0][1] == "style.safetensors"


def test_resolve_unknown_name_warns_with_close_matches():
    found, warnings = resolve([LoraTag("stlye")], AVAILABLE)
    assert found == []
    assert len(warnings) == 1 and "stlye" in warnings[0] and "style" in warnings[0]


def test_resolve_ambiguous_stem_warns_and_picks_one():
    found, warnings = resolve([LoraTag("same")], AVAILABLE)
    assert found[0][1] == "dup/same.safetensors"
    assert "2 files" in warnings[0]


def test_resolve_with_nothing_available():
    found, warnings = resolve([LoraTag("x")], [])
    assert found == [] and "no LoRA files known" in warnings[0]


def test_names_with_dots_keep_them():
    found, _ = resolve(parse("<lora:v1.5 style:1>").loras, ["v1.5 style.safetensors"])
    assert found[0][1] == "v1.5 style.safetensors"
