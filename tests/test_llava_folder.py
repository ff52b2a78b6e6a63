"""``--vlm llava:<folder>``: a path that is no folder, or a folder missing a part of the LLaVA, answers in one
line that names what is missing, before anything is loaded; what save_pretrained writes passes."""
from __future__ import annotations

import pytest
from test_vlm_llava import tiny_llava, tiny_tokenizer

from simclip_bench.errors import UserError
from simclip_bench.vlm.llava_folder import check_llava_source
from simclip_bench.vlm.load import check_vlm_spec


def test_what_save_pretrained_writes_passes_and_a_hub_id_is_left_to_the_hub_check(tmp_path):
    tiny_llava().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    check_llava_source(str(tmp_path))
    check_llava_source("llava-hf/llava-1.5-7b-hf")


@pytest.mark.parametrize("spec", ["llava:/path/that/does/not/exist", "llava:./nowhere", "llava:~/no/such/llava",
                                  "llava:a/b/c"])
def test_a_path_that_is_no_folder_is_one_line_not_a_hub_id_error(spec):
    with pytest.raises(UserError, match="no such folder"):
        check_vlm_spec(spec)


def test_a_folder_without_its_tokenizer_names_what_is_missing(tmp_path):
    tiny_llava().save_pretrained(tmp_path)  # the model, but not its tokenizer
    with pytest.raises(UserError, match=r"the folder has no tokenizer \(tokenizer.json or tokenizer.model") as e:
        check_vlm_spec(f"llava:{tmp_path}")
    assert "weights" not in str(e.value) and "config" not in str(e.value)


def test_a_folder_without_weights_or_config_names_both(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"has no config \(config.json\) and no weights \(model.safetensors"):
        check_vlm_spec(f"llava:{tmp_path}")


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "llava.bin").write_bytes(b"")
    with pytest.raises(UserError, match="is a file; pass the folder"):
        check_vlm_spec(f"llava:{tmp_path / 'llava.bin'}")
