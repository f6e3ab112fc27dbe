"""CUDA: the same model predicts the same on CPU and GPU, and an AMP training step works.

Marked ``gpu``; every test skips where CUDA is absent. On a CUDA machine:
``FNLAB_DEVICE=cuda .venv/bin/python -m pytest -m gpu tests``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")
ARCHS = ["smallcnn", "attention_cnn"]


def _model(arch: str, size: int = 28) -> torch.nn.Module:
    from fnlab import models

    torch.manual_seed(0)
    return models.create(arch, num_classes=2, in_channels=1, image_size=size).eval()


def _images(n: int = 64, size: int = 28) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, size, size, generator=gen)


@pytest.mark.parametrize("arch", ARCHS)
def test_cpu_and_gpu_predictions_agree_in_float32(arch):
    from fnlab.models import predict_scores

    model = _model(arch)
    x = _images()
    cpu = predict_scores(model, [x], device="cpu")
    gpu_model = _model(arch).to(CUDA)
    gpu_model.load_state_dict(model.state_dict())
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # true float32 on Ampere/Hopper, not TF32
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True,
                                        allow_tf32=False):
            gpu = predict_scores(gpu_model, [x], device=CUDA)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    assert cpu.shape == gpu.shape == (len(x),)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_cpu_and_gpu_predictions_agree_under_amp(arch):
    """fnlab.train.predict uses autocast (float16) on CUDA: close, and the same decisions."""
    from fnlab.data.imageset import ImageSet
    from fnlab.train import predict

    model = _model(arch)
    images = (_images(128).squeeze(1).numpy() * 255).astype(np.uint8)
    labels = np.arange(len(images)) % 2
    data = ImageSet(images, labels, split="test")
    cpu = predict(model, data, device="cpu").scores
    gpu = predict(model.to(CUDA), data, device="cuda").scores
    np.testing.assert_allclose(gpu, cpu, atol=5e-3)
    far = np.abs(cpu - 0.5) > 0.01  # away from the threshold, the decision must not flip
    assert ((gpu[far] >= 0.5) == (cpu[far] >= 0.5)).all()


def test_amp_training_step_on_cuda():
    """One mixed-precision step with a GradScaler: finite loss, finite gradients, weights move."""
    model = _model("smallcnn").to(CUDA).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x = _images(32).to(CUDA)
    y = (torch.arange(32, device=CUDA) % 2).float()
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
    assert logits.dtype == torch.float16, "autocast did not run the network in float16"
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss).item()
    moved = sum(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
    assert moved > 0


def test_fit_trains_on_cuda_with_amp():
    """fnlab.train.fit on CUDA (AMP on): finite history, model left on the GPU, useful scores."""
    from fnlab import models
    from fnlab.data.imageset import ImageSet
    from fnlab.train import TrainConfig, fit, predict

    rng = np.random.default_rng(0)
    y = np.arange(256) % 2
    x = (rng.random((256, 28, 28)) * 80 + y[:, None, None] * 120).astype(np.uint8)
    train, val = ImageSet(x, y, split="train"), ImageSet(x[:64], y[:64], split="val")
    cfg = TrainConfig(model="smallcnn", epochs=2, batch_size=64, image_size=28, device="cuda",
                      progress=False, augment=None)
    result = fit(models.create("smallcnn", image_size=28), train, val, cfg)
    assert np.isfinite(result.history["train_loss"]).all()
    assert next(result.model.parameters()).device.type == "cuda"
    preds = predict(result.model, val)
    assert preds.scores.shape == (64,)
    assert result.history["val_auc"].iloc[-1] > 0.9  # trivially separable data


def test_auto_device_picks_cuda():
    from fnlab.config import resolve_device

    assert str(resolve_device("auto")).startswith("cuda")
