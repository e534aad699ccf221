"""The SMUG family on tiny tensors: shapes, gradients, equivalences, overrides and config errors."""

import importlib

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2
from direct.nn.conjgradnet.conjgrad import ConjGrad

from smug_plugin.losses.smoothing import UStabTarget, ustab_anchors, ustab_loss
from smug_plugin.models.denoiser import load_denoiser_state
from smug_plugin.models.didn import DIDN
from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG, SMUGv0
from smug_plugin.models.weighted_smug import WeightedSMUG

TINY = dict(num_steps=3, cg_iters=4, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
FAMILY = [MoDL, SMUG, SMUGv0, WeightedSMUG, RSE2E]


def make(cls, **overrides):
    torch.manual_seed(0)
    kwargs = {**TINY, **overrides}
    if cls is not MoDL:
        kwargs = {"sigma": 0.05, "num_samples": 3, **kwargs}
    return cls(fft2, ifft2, **kwargs)


@pytest.fixture
def inputs():
    generator, mask, sens = multicoil_inputs()
    return torch.randn(sens.shape, generator=generator) * mask, mask, sens


@pytest.mark.parametrize("cls", FAMILY)
def test_forward_shape_and_every_parameter_gets_a_gradient(cls, inputs):
    model = make(cls, learn_lambda=True)
    model.train()
    out = model(*inputs)
    assert out.shape == (2, 16, 12, 2)
    out.abs().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient (DDP with find_unused_parameters=False would fail): {missing}"


def test_plugin_models_resolve_through_direct_namespace():
    module = importlib.import_module("direct.nn.smug.smug")
    assert module.SMUG is SMUG
    assert importlib.import_module("direct.nn.smug.config").SMUGConfig.__module__ == "smug_plugin.models.config"


@pytest.mark.parametrize("cls", [SMUG, SMUGv0, WeightedSMUG, RSE2E])
def test_sigma_zero_is_exactly_modl(cls, inputs):
    modl = make(MoDL).eval()
    smoothed = make(cls, sigma=0.0, num_samples=5).eval()
    smoothed.load_state_dict({**smoothed.state_dict(), **modl.state_dict()})
    assert torch.equal(modl(*inputs), smoothed(*inputs))


def test_weighted_smug_with_constant_weights_is_smug(inputs):
    smug = make(SMUG).eval()
    weighted = make(WeightedSMUG).eval()
    weighted.load_state_dict(smug.state_dict(), strict=False)
    weighted.weight_encoder.forward = lambda image: torch.full(image.shape[:1], 0.3)
    torch.testing.assert_close(weighted(*inputs), smug(*inputs), rtol=1e-5, atol=1e-6)


def test_evaluation_is_reproducible_with_a_seed_and_changes_with_another(inputs):
    model = make(SMUG).eval()
    first, second = model(*inputs), model(*inputs)
    assert torch.equal(first, second)
    model.noise_seed = 123
    assert not torch.equal(first, model(*inputs))


def test_training_draws_fresh_noise(inputs):
    model = make(SMUG).train()
    assert not torch.equal(model(*inputs), model(*inputs))


def test_test_time_overrides_of_unrolls_sigma_and_samples(inputs):
    model = make(SMUG).eval()
    reference = model(*inputs)
    with model.test_time(num_steps=6, sigma=0.02, num_samples=1):
        changed = model(*inputs)
    assert changed.shape == reference.shape and not torch.equal(changed, reference)
    model.num_samples = 0
    model.sigma = 0.0
    # sigma 0 ignores K: a single clean pass, whatever num_samples says.
    assert torch.isfinite(model(*inputs)).all()


def test_more_samples_reduce_the_variance_of_the_smoothed_output(inputs):
    model = make(SMUG, sigma=0.2).eval()
    outputs = {}
    for k in (1, 8):
        model.num_samples = k
        draws = []
        for seed in range(6):
            model.noise_seed = seed
            draws.append(model(*inputs).detach())
        outputs[k] = torch.stack(draws).var(0).mean()
    assert outputs[8] < outputs[1]


def test_reused_noise_differs_from_fresh_noise(inputs):
    fresh = make(SMUG).eval()
    reused = make(SMUG, reuse_noise=True).eval()
    assert not torch.equal(fresh(*inputs), reused(*inputs))


@pytest.mark.parametrize("each_draw", [False, True])
@pytest.mark.parametrize("cls", FAMILY)
def test_gradient_checkpointing_gives_the_same_gradients(cls, each_draw, inputs):
    plain, checkpointed = make(cls), make(cls, gradient_checkpointing=True, checkpoint_each_draw=each_draw)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(5)
        model(*inputs).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [SMUG, SMUGv0, WeightedSMUG, RSE2E])
def test_gradient_checkpointing_runs_the_denoiser_one_draw_at_a_time(cls, inputs):
    model = make(cls, gradient_checkpointing=True, checkpoint_each_draw=True).train()
    batches = []
    forward = model.denoiser.forward

    def counted(image):  # forward hooks do not fire when checkpoint recomputes; the forward itself runs
        batches.append(image.shape[0])
        return forward(image)

    model.denoiser.forward = counted
    model(*inputs).square().sum().backward()
    slices = inputs[0].shape[0]
    # Per unroll: K calls of one draw in the forward pass, and K recomputations of one draw in the backward pass.
    assert batches == [slices] * (2 * 3 * TINY["num_steps"])


def test_details_hold_every_unroll_with_k_draws(inputs):
    for cls in (SMUG, RSE2E, MoDL):
        model = make(cls).train()
        _, details = model(*inputs, return_details=True)
        draws = 1 if cls is MoDL else 3
        assert len(details.iterates) == len(details.denoised) == TINY["num_steps"]
        assert details.denoised[0].shape == (draws, 2, 16, 12, 2)


def test_an_unroll_is_directs_conjugate_gradient_on_the_denoised_adjoint_bit_for_bit(inputs):
    kspace, mask, sens = inputs
    model = make(MoDL, num_steps=1, lambda_init=0.5).eval()
    direct = ConjGrad(fft2, ifft2, num_iters=TINY["cg_iters"], tol=1e-6)
    with torch.no_grad():
        z = model.denoise(direct._A_star_op(kspace, sens, mask))
        expected = direct.cg(z, kspace, sens, mask, model.lambd, z)
        assert torch.equal(model(kspace, mask, sens), expected)


def test_data_consistency_fits_the_measurements_when_lambda_is_small(inputs):
    _, mask, sens = inputs
    model = make(MoDL, lambda_init=1e-4, cg_iters=60, num_steps=1).eval()
    kspace = model.forward_project(torch.randn(2, 16, 12, 2, generator=torch.Generator().manual_seed(3)), mask, sens)
    image = model(kspace, mask, sens)
    residual = model.forward_project(image, mask, sens) - kspace
    assert residual.norm() < 0.05 * kspace.norm()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sigma": -0.1}, "sigma"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_steps": 0}, "num_steps"),
        ({"lambda_init": 0.0}, "lambda_init"),
        ({"denoiser_hidden_channels": 0}, "denoiser_hidden_channels"),
    ],
)
def test_bad_config_values_are_rejected_with_the_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(SMUG, **overrides)


def test_bad_inputs_are_rejected(inputs):
    kspace, mask, sens = inputs
    model = make(MoDL)
    with pytest.raises(ValueError, match="sensitivity_map"):
        model(kspace, mask, sens[:, :2])
    with pytest.raises(ValueError, match=r"\(N, coil, H, W, 2\)"):
        model(kspace[..., 0], mask, sens)


def test_ustab_value_and_gradient_on_a_hand_checkable_case():
    # Identity-plus-scale "denoiser" D(x) = a x; one unroll, K = 2 draws.
    scale = torch.tensor(2.0, requires_grad=True)
    target = torch.ones(1, 1, 1, 2)
    noisy = torch.stack([torch.full((1, 1, 1, 2), 1.5), torch.full((1, 1, 1, 2), 0.5)])
    denoised = [scale * noisy]
    anchors = ustab_anchors(UStabTarget.DENOISED_TARGET, [target], target, lambda x: scale * x)
    loss = ustab_loss(denoised, anchors)
    # mean over draws of (a*1.5 - a)^2 and (a*0.5 - a)^2 = a^2 * 0.25 -> 1.0 at a = 2; d/da = 0.5 a = 1.
    torch.testing.assert_close(loss, torch.tensor(1.0))
    loss.backward()
    torch.testing.assert_close(scale.grad, torch.tensor(1.0))
    scale.grad = None
    denoised = [scale * noisy]
    detached = ustab_loss(
        denoised, ustab_anchors("denoised_target", [target], target, lambda x: scale * x, detach=True)
    )
    detached.backward()
    # Only the draw branch: d/da mean((1.5a - 2)^2, (0.5a - 2)^2) = (1.5*1 + 0.5*(-1)) = 1.0 at a = 2.
    torch.testing.assert_close(scale.grad, torch.tensor(1.0))
    target_loss = ustab_loss(denoised, ustab_anchors(UStabTarget.TARGET, [target], target, lambda x: scale * x))
    torch.testing.assert_close(target_loss, torch.tensor(((3.0 - 1) ** 2 + (1.0 - 1) ** 2) / 2))


def test_unknown_ustab_target_is_rejected():
    with pytest.raises(ValueError, match="unknown_target"):
        ustab_anchors("unknown_target", [], torch.zeros(1), lambda x: x)


def test_pretrained_denoiser_initialises_every_family_member(tmp_path):
    pretrained = DIDN(denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.uniform_(-0.1, 0.1)
    path = tmp_path / "model_10.pt"
    torch.save({"model": pretrained.state_dict()}, path)
    for cls in FAMILY:
        model = make(cls, denoiser_checkpoint=str(path))
        assert model.load_pretrained_denoiser()  # what the engine does when `direct train` starts
        for name, value in pretrained.denoiser.state_dict().items():
            assert torch.equal(model.denoiser.state_dict()[name], value), (cls.__name__, name)


def test_missing_or_wrong_denoiser_checkpoint_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="denoiser_checkpoint"):
        make(SMUG, denoiser_checkpoint=str(tmp_path / "absent.pt")).load_pretrained_denoiser()
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no denoiser weights"):
        make(SMUG, denoiser_checkpoint=str(tmp_path / "other.pt")).load_pretrained_denoiser()
    wide = DIDN(denoiser_hidden_channels=12, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
    torch.save({"model": wide.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="denoiser_hidden_channels"):
        load_denoiser_state(make(SMUG).denoiser, tmp_path / "wide.pt")


def test_mixed_precision_keeps_data_consistency_in_float32(inputs):
    model = make(SMUG).eval()
    reference = model(*inputs)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = model(*inputs)
    # The denoiser runs in bfloat16, the CG/FFT solve in float32: a float32 output close to the full-precision one.
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert (mixed - reference).norm() < 0.05 * reference.norm()
