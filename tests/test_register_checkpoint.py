"""`manage.py register_checkpoint`: a real checkpoint from the shell, checked by the one
loader (config and processor, no weights) before a row exists."""

from __future__ import annotations

import json
import shutil

import pytest
from django.core.management import CommandError, call_command

from config.commands import object_by_name_or_id
from training.models import Checkpoint

pytestmark = [pytest.mark.django_db]


def test_the_tiny_llava_registers_and_prints_its_name_and_id(tiny_dir, capsys):
    call_command("register_checkpoint", str(tiny_dir), "--name", "tiny")
    checkpoint = Checkpoint.objects.get()
    out = capsys.readouterr().out
    assert f"checkpoint 'tiny' registered (id {checkpoint.pk})" in out
    assert (checkpoint.kind, checkpoint.model_path, checkpoint.adapter_path) == (
        "base",
        str(tiny_dir.resolve()),
        "",
    )
    assert checkpoint.config["model_type"] == "llava"
    # Every --checkpoint / --base option now finds it, by name or by id.
    assert object_by_name_or_id(Checkpoint, "tiny", "checkpoint") == checkpoint
    assert object_by_name_or_id(Checkpoint, str(checkpoint.pk), "checkpoint") == checkpoint


def test_the_name_defaults_to_the_folder_and_root_folders_are_stored_relative(tiny_dir, settings):
    inside = settings.CHECKPOINT_ROOT / "bases" / "tiny-copy"
    shutil.copytree(tiny_dir, inside)
    call_command("register_checkpoint", str(inside))
    checkpoint = Checkpoint.objects.get()
    assert checkpoint.name == "tiny-copy"
    assert checkpoint.model_path == "bases/tiny-copy"  # valid wherever the root is mounted


def test_an_adapter_folder_is_stored_as_its_base_plus_the_adapter(tiny_dir, tmp_path):
    adapter = tmp_path / "my-lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tiny_dir), "peft_type": "LORA"})
    )
    call_command("register_checkpoint", str(adapter))
    checkpoint = Checkpoint.objects.get()
    assert checkpoint.name == "my-lora"
    assert checkpoint.model_path == str(tiny_dir.resolve())
    assert checkpoint.adapter_path == str(adapter.resolve())


def test_a_folder_without_config_is_refused_and_creates_nothing(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(
        CommandError, match=r"not an image-text-to-text checkpoint: it has no config\.json"
    ):
        call_command("register_checkpoint", str(empty), "--name", "x")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("register_checkpoint", str(tmp_path / "nowhere"))
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CommandError, match="model_type='bert'"):
        call_command("register_checkpoint", str(empty))
    assert not Checkpoint.objects.exists()


def test_an_adapter_path_that_does_not_exist_is_refused(tiny_dir, tmp_path):
    with pytest.raises(CommandError, match=r"adapter path .*missing-lora does not exist"):
        call_command(
            "register_checkpoint", str(tiny_dir), "--adapter", str(tmp_path / "missing-lora")
        )
    not_lora = tmp_path / "plain"
    not_lora.mkdir()
    with pytest.raises(
        CommandError, match=r"is not a LoRA adapter: it has no adapter_config\.json"
    ):
        call_command("register_checkpoint", str(tiny_dir), "--adapter", str(not_lora))
    assert not Checkpoint.objects.exists()


def test_an_uncached_hub_id_offline_gives_a_clear_error(capsys):
    with pytest.raises(CommandError) as raised:
        call_command("register_checkpoint", "nobody-here/llava-none-7b")
    message = str(raised.value)
    assert "cannot load hub id 'nobody-here/llava-none-7b'" in message
    assert "HF_HUB_OFFLINE=1" in message and "Traceback" not in message
    assert not Checkpoint.objects.exists()


def test_a_taken_name_is_a_clear_error(tiny_dir):
    call_command("register_checkpoint", str(tiny_dir), "--name", "tiny")
    with pytest.raises(CommandError, match="a checkpoint named 'tiny' exists already"):
        call_command("register_checkpoint", str(tiny_dir), "--name", "tiny")
    assert Checkpoint.objects.count() == 1
