"""QLoRA trains on the true gradient even after an evaluation: bitsandbytes' CPU inference packing
(AVX512-BF16 machines) must not reach the training steps (tunekit.models.loading.keep_4bit_layers_trainable)."""

from __future__ import annotations

import torch


def test_lora_gradients_are_the_same_after_an_evaluation() -> None:
    from peft import LoraConfig, get_peft_model

    from tunekit.config.sections import AdapterSection, ModelSection
    from tunekit.models.loading import load_model
    from tunekit.models.refs import resolve

    section = ModelSection(name_or_path="tiny:llama", quantization="4bit", compute_dtype="fp32", dtype="fp32")
    model = load_model(resolve(section.name_or_path, build=True), section, AdapterSection(type="qlora"))
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero B, so every LoRA matrix gets a gradient
            torch.nn.init.normal_(param, std=0.02)
    torch.manual_seed(1)
    ids = torch.randint(3, 500, (4, 24))

    def gradients() -> torch.Tensor:
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    fresh = gradients()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids, labels=ids)  # what Trainer.evaluate does before training
    after = gradients()
    assert fresh.norm() > 0
    assert torch.allclose(after, fresh, rtol=1e-4, atol=1e-7), float((after - fresh).norm() / fresh.norm())
