"""The training config: typing by schema (C, libyaml), errors with file:line:col and key,
defaults, overrides, from_dict, format_yaml round trip."""
import dataclasses
import os
from pathlib import Path

import pytest

from lora_native import _native
from lora_native.config import KEYS, Config, format_yaml, load_config
from lora_native.errors import ConfigError, LoraNativeError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BASE = "base_model: m.safetensors\ntrain_data_dir: data\n"  # lines 1-2 of most configs below


@pytest.fixture
def write(tmp_path):
    """write(text or bytes) -> path of a config file holding it."""
    def _write(content, name="cfg.yaml"):
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return str(path)
    return _write


def load(write, text, overrides=None):
    return load_config(write(text), overrides)


# ---- the examples and the schema

@pytest.mark.parametrize("name", ["sd15_style", "sdxl_style", "demo", "llm_chat"])
def test_every_example_loads(name, recwarn):
    cfg = load_config(EXAMPLES / (name + ".yaml"))
    assert cfg.source == str(EXAMPLES / (name + ".yaml"))
    assert os.path.isabs(cfg.base_model) and os.path.isabs(cfg.output_dir)
    assert not cfg.warnings and not recwarn.list  # the examples are free of warnings too


def test_demo_example_values():
    cfg = load_config(EXAMPLES / "demo.yaml")
    assert cfg.resolution == (64, 64)
    assert (cfg.batch_size, cfg.output_name, cfg.mixed_precision, cfg.device) == (2, "demo", "no", "cpu")
    repo = EXAMPLES.parent
    assert cfg.base_model == str(repo / "demo_output" / "model" / "tiny-sd15.safetensors")
    assert cfg.train_data_dir == str(repo / "demo_output" / "clean")
    assert cfg.output_dir == str(repo / "demo_output" / "output")


def test_schema_and_config_fields_agree():
    rows = _native.config_schema()
    assert [r[0] for r in rows] == list(KEYS)
    fields = {f.name for f in dataclasses.fields(Config)} - {"source", "warnings", "origins"}
    assert set(KEYS) == fields and len(KEYS) == 77
    schema = {r[0]: r for r in rows}
    assert schema["lora_rank"] == ("lora_rank", "int", None, 1, None, False)
    assert schema["base_model"][5] is True and schema["train_data_dir"][5] is True
    assert schema["txt_split"][2] == ("file", "paragraph") and schema["lora_target_modules"][1] == "list"
    assert schema["lora_dropout"][3:5] == (0.0, 1.0)
    assert schema["mixed_precision"][2] == ("no", "fp16", "bf16")
    assert schema["resolution"][1:5] == ("resolution", None, 64, 4096)
    assert schema["caption_dropout_rate"][3:5] == (0.0, 1.0)


def test_config_error_is_in_the_family():
    assert issubclass(ConfigError, LoraNativeError)


# ---- typing by the key's schema, not YAML 1.1 guessing

def test_values_are_typed_by_their_key(write):
    cfg = load(write, BASE + "mixed_precision: no\noutput_name: 0123\nlearning_rate: 1e-4\nunet_lr: 5e-5\n"
               "text_encoder_lr: .5\nlora_alpha: 1.0\nconv_alpha: 1E-4\nnoise_offset: +1e-4\nweight_decay: 0\n"
               "conv_lora: true\ntrain_text_encoder: true\n")
    assert cfg.mixed_precision == "no"
    assert cfg.output_name == "0123"
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.unet_lr == 5e-5 and cfg.text_encoder_lr == 0.5 and cfg.lora_alpha == 1.0
    assert cfg.conv_alpha == 1e-4 and cfg.noise_offset == 1e-4
    assert cfg.weight_decay == 0.0 and isinstance(cfg.weight_decay, float)


def test_quoted_numbers_are_accepted_for_numeric_keys(write):
    cfg = load(write, BASE + "learning_rate: '1e-4'\nlora_rank: \"32\"\nclip_skip: ' 2 '\n")
    assert (cfg.learning_rate, cfg.lora_rank, cfg.clip_skip) == (1e-4, 32, 2)


@pytest.mark.parametrize("text,value", [("true", True), ("false", False), ("yes", True), ("no", False),
                                        ("on", True), ("off", False), ("True", True), ("YES", True),
                                        ("Off", False), ("'on'", True)])
def test_bools(write, text, value):
    assert load(write, BASE + "conv_lora: %s\n" % text).conv_lora is value


@pytest.mark.parametrize("text", ["~", "null", "Null", "NULL", ""])
def test_null_means_not_set(write, text):
    cfg = load(write, BASE + "trigger_word: %s\nlora_rank: %s\nresolution: %s\n" % (text, text, text))
    assert cfg.trigger_word is None and cfg.lora_rank == 16 and cfg.resolution is None


def test_quoted_null_is_a_string(write):
    assert load(write, BASE + "trigger_word: 'null'\n").trigger_word == "null"
    assert load(write, BASE + "trigger_word: !!str ~\n").trigger_word == "~"


def test_resolution_forms(write):
    assert load(write, BASE + "resolution: 768\n").resolution == (768, 768)
    assert load(write, BASE + "resolution: [768, 512]\n").resolution == (768, 512)
    assert load(write, BASE + "resolution:\n  - 640\n  - 448\n").resolution == (640, 448)
    assert load(write, BASE + "resolution: 1024x768\n").resolution == (1024, 768)


def test_sample_prompts_list_or_file(write, tmp_path):
    cfg = load(write, BASE + "sample_prompts:\n  - a cat\n  - 'b: c'\n  - 123\n")
    assert cfg.sample_prompts == ("a cat", "b: c", "123")
    cfg = load(write, BASE + "sample_prompts: prompts.txt\n")
    assert cfg.sample_prompts == str(tmp_path / "prompts.txt")


def test_enums_take_any_case_and_keep_the_choice_spelling(write):
    assert load(write, BASE + "mixed_precision: BF16\nlog_with: TensorBoard\n").log_with == "tensorboard"


def test_bom_is_accepted_and_positions_ignore_it(write):
    path = write(b"\xef\xbb\xbf" + BASE.encode() + b"lora_rank: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "%s:3:12: lora_rank:" % path in str(e.value)


def test_empty_and_comment_only_files_have_no_keys():
    assert _native.config_parse("", "x.yaml") == {}
    assert _native.config_parse("# nothing\n---\n", "x.yaml") == {}


def test_parse_returns_values_with_key_positions():
    got = _native.config_parse("lora_rank: 4\n\n  # c\nseed:   7\n", "x.yaml")
    assert got == {"lora_rank": (4, 1, 1), "seed": (7, 4, 1)}


# ---- bad configs: each names file:line:col and the key

BAD = [
    # (config text, line, column, key, words the message holds)
    (BASE + "lora_rnak: 4\n", 3, 1, "lora_rnak", "did you mean 'lora_rank'?"),
    (BASE + "network_dim: 4\n", 3, 1, "network_dim", "lora-native calls it 'lora_rank'"),
    (BASE + "lora_rank: 16.5\n", 3, 12, "lora_rank", "expected an integer, found '16.5'"),
    (BASE + "learning_rate: fast\n", 3, 16, "learning_rate", "expected a number, found 'fast'"),
    (BASE + "conv_lora: maybe\n", 3, 12, "conv_lora", "expected true or false"),
    (BASE + "sample_prompts: {a: 1}\n", 3, 17, "sample_prompts", "expected a list of strings"),
    (BASE + "sample_prompts:\n  - a\n  - [b]\n", 5, 5, "sample_prompts", "item 2: expected a string, found a list"),
    (BASE + "mixed_precision: fp32\n", 3, 18, "mixed_precision", "'fp32' is not a valid choice; expected one of: "
     "no, fp16, bf16"),
    (BASE + "lora_rank: 0\n", 3, 12, "lora_rank", "must be at least 1, found '0'"),
    (BASE + "learning_rate: -1e-4\n", 3, 16, "learning_rate", "must be greater than 0, found '-1e-4'"),
    (BASE + "caption_dropout_rate: 1.5\n", 3, 23, "caption_dropout_rate", "must be between 0 and 1, found '1.5'"),
    (BASE + "network_dropout: 1\n", 3, 18, "network_dropout", "at least 0 and less than 1"),
    (BASE + "clip_skip: 13\n", 3, 12, "clip_skip", "between 1 and 12"),
    (BASE + "resolution: [4100, 512]\n", 3, 13, "resolution", "width must be between 64 and 4096, found 4100"),
    (BASE + "resolution: 500\n", 3, 13, "resolution", "multiple of 8"),
    (BASE + "epochs: 1\nseed: 3\nepochs: 2\n", 5, 1, "epochs", "duplicate key; first defined at line 3, column 1"),
    ("train_data_dir: data\nepochs: 2\n", 1, 1, "base_model", "required key is missing"),
    ("base_model: m.safetensors\n", 1, 1, "train_data_dir", "required key is missing"),
    (BASE.replace("m.safetensors", "~"), 1, 1, "base_model", "needs a value"),
    ("base_model: m.safetensors\n\tlora_rank: 4\n", 2, 1, "lora_rank",
     "tabs are not allowed for indentation in YAML; use spaces"),
    (BASE + "sample_prompts:\n  - a\n\t- b\n", 5, 1, "sample_prompts", "tabs are not allowed"),
    (BASE + "lora_rank: [1, 2\nepochs: 3\n", 4, 7, "lora_rank", "invalid YAML: did not find expected ',' or ']' "
     "(while parsing a flow sequence started at line 3, column 12)"),
    (BASE + "output_name: 'abc\n", 4, 1, "output_name", "invalid YAML: found unexpected end of stream"),
    (BASE + "lora_rank: 4\n  epochs: 3\n", 4, 9, "epochs", "check this line's indentation"),
    ("- base_model: m\n- epochs: 2\n", 1, 1, None, "the config must be a mapping of `key: value` lines, found a list"),
    ("just words\n", 1, 1, None, "found a single value 'just words'"),
    (BASE + "lora_rank:\n  value: 4\n", 4, 3, "lora_rank", "expected an integer, found a mapping"),
    (BASE + "lora_rank: &r 4\n", 3, 12, "lora_rank", "anchors (&name) are not supported"),
    (BASE + "conv_dim: *r\n", 3, 11, "conv_dim", "aliases (*name) are not supported"),
    (BASE + "---\nepochs: 3\n", 3, 1, None, "a config holds one YAML document; found a second one"),
    (BASE + "output_name: a/b\n", 3, 14, "output_name", "must be a file name"),
    (BASE + "output_name: ''\n", 3, 14, "output_name", "must be a file name"),
    (BASE + "caption_extension: txt\n", 3, 20, "caption_extension", "starting with '.'"),
    (BASE + "seed: 99999999999999999999\n", 3, 7, "seed", "too large for an integer"),
    (BASE + "color_aug: true\ncache_latents: true\n", 3, 1, "color_aug",
     "cannot be combined with cache_latents (line 4): color augmentation must happen before the VAE"),
    (BASE + "model_type: llm\n", 3, 1, "model_type", "llm needs task_type: text-generation"),
    (BASE + "min_bucket_reso: 1024\nmax_bucket_reso: 512\n", 3, 1, "min_bucket_reso", "larger than max_bucket_reso"),
    (BASE + "mixed_precision: fp16\ndevice: cpu\n", 3, 1, "mixed_precision", "fp16 needs a CUDA device"),
]


@pytest.mark.parametrize("text,line,column,key,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config(write, text, line, column, key, words):
    path = write(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    e = info.value
    assert str(e).startswith("%s:%d:%d: %s" % (path, line, column, key + ": " if key else "")), str(e)
    assert words in str(e)
    assert (e.path, e.line, e.column, e.key) == (path, line, column, key)


def test_bad_utf8_is_refused_with_its_position(write):
    path = write(BASE.encode() + b"trigger_word: caf\xe9 noir\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == "%s:3:18: trigger_word: invalid UTF-8 (byte 0xe9); save the file as UTF-8" % path


def test_utf16_and_control_characters_are_refused(write):
    with pytest.raises(ConfigError, match="UTF-16"):
        load_config(write("base_model: m\n".encode("utf-16")))
    with pytest.raises(ConfigError, match=r":3:16: trigger_word: invalid text: control characters"):
        load_config(write(BASE + "trigger_word: a\x01\n"))


def test_every_problem_is_reported_at_once(write):
    path = write(BASE + "lora_rank: x\nepochs: 0\nlearnig_rate: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    e = info.value
    assert [(x.line, x.key) for x in e.errors] == [(3, "lora_rank"), (4, "epochs"), (5, "learnig_rate")]
    assert str(e).splitlines()[2] == "%s:5:1: learnig_rate: unknown key; did you mean 'learning_rate'?" % path


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


# ---- paths and defaults

def test_paths_are_relative_to_the_config_folder(write, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load(write, "base_model: ~/models/m.safetensors\ntrain_data_dir: data\noutput_dir: /abs/out\n"
               "resume_from_checkpoint: latest\nnetwork_weights: ../w.safetensors\n")
    assert cfg.base_model == str(tmp_path / "home" / "models" / "m.safetensors")
    assert cfg.train_data_dir == str(tmp_path / "data")
    assert cfg.output_dir == "/abs/out" and cfg.logging_dir == "/abs/out/logs"
    assert cfg.resume_from_checkpoint == "latest"
    assert cfg.network_weights == str(tmp_path.parent / "w.safetensors")


def test_defaults_and_derived_defaults(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(write, BASE + "lora_rank: 8\nlearning_rate: 2e-4\n")
    assert (cfg.lora_alpha, cfg.conv_dim, cfg.conv_alpha) == (8.0, 8, 8.0)
    assert cfg.unet_lr == cfg.text_encoder_lr == 2e-4
    assert cfg.output_dir == str(tmp_path / "output") and cfg.logging_dir == str(tmp_path / "output" / "logs")
    assert cfg.metadata_path is None
    assert (cfg.epochs, cfg.batch_size, cfg.seed, cfg.output_name, cfg.log_with) == (10, 1, 42, "lora", "none")
    assert cfg.resolution is None and cfg.max_bucket_reso is None
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.csv").write_text("filename,prompt\n")
    assert load(write, BASE).metadata_path == str(tmp_path / "data" / "metadata.csv")
    cfg = load(write, BASE + "conv_dim: 4\nconv_lora: true\ncache_latents_to_disk: true\n")
    assert (cfg.conv_dim, cfg.conv_alpha, cfg.cache_latents) == (4, 4.0, True)


def test_text_generation_keys(write, tmp_path):
    text = "base_model: models/llm\ntrain_data_dir: chat.jsonl\ntask_type: text-generation\nmax_seq_length: 1024\n"
    cfg = load(write, text)
    assert cfg.task_type == "text-generation" and cfg.train_data_dir.endswith("chat.jsonl")
    assert cfg.max_seq_length == 1024 and cfg.save_precision == "float" and cfg.lora_target_modules is None
    assert (cfg.packing, cfg.txt_split, cfg.text_column, cfg.lora_dropout, cfg.merge_output) == (
        False, "file", "text", 0.0, False)
    cfg = load(write, text + "lora_target_modules: [q_proj, v_proj]\nlora_dropout: 0.05\npacking: true\n"
                             "txt_split: paragraph\nchat_template: \"{% for m in messages %}{{ m.content }}{% endfor %}\"\n")
    assert cfg.lora_target_modules == ("q_proj", "v_proj") and cfg.lora_dropout == 0.05 and cfg.packing
    assert cfg.txt_split == "paragraph" and cfg.chat_template.startswith("{% for")
    assert load(write, text + "lora_target_modules: q_proj, v_proj\n").lora_target_modules == ("q_proj", "v_proj")
    assert load(write, BASE).save_precision == "fp16"
    (tmp_path / "t.jinja").write_text("{{ x }}")
    assert load(write, text + "chat_template: t.jinja\n").chat_template == str(tmp_path / "t.jinja")
    with pytest.raises(ConfigError, match="chat_template: .*nope.jinja is neither"):
        load(write, text + "chat_template: nope.jinja\n")
    with pytest.raises(ConfigError, match="train_data_dir: required key is missing"):
        load(write, "base_model: models/llm\ntask_type: text-generation\n")
    with pytest.raises(ConfigError, match="lora_dropout"):
        load(write, text + "lora_dropout: 1\n")
    with pytest.raises(ConfigError, match="lora-native calls it 'lora_target_modules'"):
        load(write, text + "target_modules: [q_proj]\n")


def test_keys_of_the_other_task_are_warned_once(write):
    text = "base_model: m\ntrain_data_dir: d\ntask_type: text-generation\n"
    with pytest.warns(UserWarning) as record:
        load(write, text + "resolution: 768\nclip_skip: 2\n")
    messages = [str(w.message) for w in record if "task_type" in str(w.message)]
    assert len(messages) == 1
    assert "4:1: resolution: ignored for task_type text-generation (a text-to-image key), as are clip_skip" \
        in messages[0]
    with pytest.warns(UserWarning, match="packing: ignored for task_type text-to-image"):
        load(write, BASE + "packing: true\n")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load(write, text)
        Config.from_dict(cfg.to_dict())  # every key set, at its default: nothing to say


def test_keep_tokens_without_shuffle_is_a_warning(write):
    path = write(BASE + "keep_tokens: 2\n")
    with pytest.warns(UserWarning, match="3:1: keep_tokens: has no effect without shuffle_caption"):
        cfg = load_config(path)
    assert cfg.keep_tokens == 2 and len(cfg.warnings) == 1


def test_config_error_helper_points_at_the_key(write):
    path = write(BASE + "lora_rank: 8\n")
    cfg = load_config(path)
    assert str(cfg.error("base_model", "file not found")) == "%s:1:1: base_model: file not found" % path


# ---- overrides (command line and API)

def test_overrides_are_typed_like_the_file(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(BASE + "lora_rank: 8\nseed: 1\n", name="sub.yaml")
    cfg = load_config(path, {"lora_rank": "32", "learning_rate": "5e-5", "mixed_precision": "no",
                             "resolution": "768x512", "sample_prompts": "[a cat, 'b, c']", "conv_lora": "yes",
                             "output_dir": "runs/a", "seed": 7, "epochs": None, "trigger_word": "null"})
    assert (cfg.lora_rank, cfg.learning_rate, cfg.mixed_precision, cfg.conv_lora) == (32, 5e-5, "no", True)
    assert cfg.resolution == (768, 512) and cfg.sample_prompts == ("a cat", "b, c")
    assert cfg.output_dir == str(tmp_path / "runs" / "a")  # from the current directory
    assert cfg.seed == 7 and cfg.epochs == 10 and cfg.trigger_word is None
    assert cfg.lora_alpha == 32.0  # derived from the overridden rank


def test_override_errors_name_the_command_line(write):
    path = write(BASE)
    with pytest.raises(ConfigError) as info:
        load_config(path, {"lora_rank": "abc", "lora_rnk": "4", "epochs": 0})
    e = info.value
    lines = str(e).splitlines()
    assert lines[0] == "command line: lora_rank: expected an integer, found 'abc'"
    assert lines[1] == "command line: lora_rnk: unknown key; did you mean 'lora_rank'?"
    assert lines[2] == "api: epochs: value must be at least 1, found 0"
    assert e.origin == "command line" and e.path is None and e.line is None and e.key == "lora_rank"


def test_override_can_supply_a_required_key(write):
    cfg = load_config(write("train_data_dir: data\n"), {"base_model": "m.safetensors"})
    assert cfg.base_model == os.path.abspath("m.safetensors")


def test_parse_value_directly():
    assert _native.config_parse_value("resolution", "[768, 512]") == (768, 512)
    assert _native.config_parse_value("learning_rate", "1e-4") == 1e-4
    assert _native.config_parse_value("output_name", "0123") == "0123"
    with pytest.raises(ConfigError, match=r"^cli: clip_skip: value must be between 1 and 12, found '0'$"):
        _native.config_parse_value("clip_skip", "0", origin="cli")


# ---- from_dict, to_dict, format_yaml, frozen

def test_from_dict_checks_python_values(tmp_path):
    cfg = Config.from_dict({"base_model": tmp_path / "m.safetensors", "train_data_dir": "data", "lora_rank": 4,
                            "learning_rate": 1, "resolution": [512, 768], "sample_prompts": ["a", "b"]})
    assert cfg.base_model == str(tmp_path / "m.safetensors") and cfg.learning_rate == 1.0
    assert cfg.resolution == (512, 768) and cfg.sample_prompts == ("a", "b") and cfg.source is None
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"base_model": "m", "train_data_dir": "d", "lora_rank": "16", "conv_lora": 1})
    assert str(info.value).splitlines() == ["api: lora_rank: expected an integer, found str '16'",
                                            "api: conv_lora: expected true or false, found int 1"]
    with pytest.raises(ConfigError, match="^ui: lora_rank: expected an integer, found float 16.5$"):
        Config.from_dict({"base_model": "m", "train_data_dir": "d", "lora_rank": 16.5}, origin="ui")
    with pytest.raises(ConfigError, match="^api: base_model: required key is missing"):
        Config.from_dict({"train_data_dir": "d"})


def test_round_trips(write, tmp_path):
    cfg = load(write, BASE + "lora_rank: 8\nlora_alpha: 4\nlearning_rate: 1e-5\nresolution: [640, 448]\n"
               "trigger_word: \"it's \\\"quoted\\\" \\\\ #not a comment: é\\n\"\noutput_name: 0123\n"
               "sample_prompts: [' lead', 'a: b', '- c']\nenable_bucket: on\nmixed_precision: bf16\n"
               "lr_scheduler: cosine_with_restarts\nlr_scheduler_num_cycles: 3\nseed: 0\n")
    again = load_config(write(format_yaml(cfg), name="again.yaml"))
    assert again == cfg and again.trigger_word == "it's \"quoted\" \\ #not a comment: é\n"
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["resolution"] == [640, 448]
    text = format_yaml(cfg)
    assert "lora_alpha: 4.0" in text and "conv_dim" not in text  # derived defaults are left out


def test_config_is_frozen(write):
    cfg = load(write, BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lora_rank = 3
