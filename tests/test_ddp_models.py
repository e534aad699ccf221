"""Every plugin model trains under DistributedDataParallel as DIRECT wraps it (find_unused_parameters=False): two CPU
processes (gloo), each with its own data, run DIRECT's training iteration with the plugin losses, and end with the
same parameters.

DIRECT's launcher hard-codes NCCL, so the test builds the gloo process group itself; the wrapping is the line of
``direct.engine.Engine.train`` (``broadcast_buffers=False, find_unused_parameters=False``; no ``device_ids`` on CPU).
"""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import multicoil_inputs
from direct.config.defaults import DefaultConfig, FunctionConfig, LossConfig, TrainingConfig, ValidationConfig
from direct.data.transforms import fft2, ifft2
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel

from smug_plugin.models import config
from smug_plugin.models.didn import DIDN
from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG, SMUGv0
from smug_plugin.models.smug_engine import (
    DIDNEngine,
    MoDLEngine,
    RSE2EEngine,
    SMUGEngine,
    SMUGv0Engine,
    WeightedSMUGEngine,
)
from smug_plugin.models.weighted_smug import WeightedSMUG
from smug_plugin.operators import MultiCoilOperator

DENOISER = dict(denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_num_convs_recon=1)
UNROLLED = dict(num_steps=2, cg_iters=2, learn_lambda=True, **DENOISER)
SMOOTHED = dict(sigma=0.05, num_samples=2, **UNROLLED)
RECONSTRUCTION = ["l2_loss", "ustab_loss"]
# (network, engine, config, its settings, losses): every plugin model; SMUG once more with gradient checkpointing,
# which recomputes each unroll inside the backward pass that DDP hooks into.
MODELS = {
    "MoDL": (MoDL, MoDLEngine, config.MoDLConfig, UNROLLED, RECONSTRUCTION),
    "SMUG": (SMUG, SMUGEngine, config.SMUGConfig, SMOOTHED, RECONSTRUCTION),
    "SMUG checkpointed": (
        SMUG,
        SMUGEngine,
        config.SMUGConfig,
        {**SMOOTHED, "gradient_checkpointing": True},
        RECONSTRUCTION,
    ),
    "SMUGv0": (SMUGv0, SMUGv0Engine, config.SMUGv0Config, SMOOTHED, RECONSTRUCTION),
    "Weighted SMUG": (WeightedSMUG, WeightedSMUGEngine, config.WeightedSMUGConfig, SMOOTHED, RECONSTRUCTION),
    "RS-E2E": (RSE2E, RSE2EEngine, config.RSE2EConfig, SMOOTHED, RECONSTRUCTION),
    "DIDN pre-training": (DIDN, DIDNEngine, config.DIDNConfig, dict(sigma=0.05, **DENOISER), ["denoiser_loss"]),
}
STEPS = 2  # DDP finds a parameter without a gradient only when the next iteration starts


def engine(name: str):
    """The model's DIRECT engine, the network wrapped as ``direct train`` wraps it in a multi-process run."""
    network_class, engine_class, config_class, settings, losses = MODELS[name]
    model_name = f"smug.{network_class.__module__.rsplit('.', 1)[-1]}.{network_class.__name__}"
    cfg = OmegaConf.structured(
        DefaultConfig(
            model=config_class(model_name=model_name),
            training=TrainingConfig(loss=LossConfig(losses=[FunctionConfig(loss) for loss in losses])),
            validation=ValidationConfig(crop=None),
        )
    )
    cfg.model.update(settings)
    torch.manual_seed(0)  # the same initial weights in every rank, as DIRECT's seeded start gives
    network = network_class(fft2, ifft2, **settings)
    result = engine_class(cfg, network, "cpu", fft2, ifft2)
    result.ndim = 2  # what DIRECT's training loop reads from the dataset
    result.model = DistributedDataParallel(network, broadcast_buffers=False, find_unused_parameters=False)
    result.model.train()
    return result


def batch(rank: int, step: int) -> dict[str, torch.Tensor]:
    """Another batch in every rank and step: the ranks' gradients differ, so only DDP's averaging keeps them equal."""
    generator, mask, sens = multicoil_inputs(batch=1, coils=2, size=(12, 10), seed=10 * step + rank + 1)
    image = torch.rand(1, 12, 10, 2, generator=generator)
    kspace = MultiCoilOperator(fft2, ifft2, sens, mask).fully_sampled(image)
    return {
        "kspace": kspace,
        "masked_kspace": kspace * mask,
        "sampling_mask": mask,
        "sensitivity_map": sens,
        "target": (image**2).sum(-1).sqrt(),
    }


def train_every_model(rank: int, world_size: int, init_method: str, results) -> None:
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    try:
        for name in MODELS:
            model_engine = engine(name)
            loss_fns = model_engine.build_loss()
            optimizer = torch.optim.Adam(model_engine.model.parameters(), lr=1e-2)
            initial = [p.detach().clone() for p in model_engine.model.parameters()]
            losses = []
            for step in range(STEPS):
                optimizer.zero_grad()
                torch.manual_seed(100 * rank + step)  # each rank its own training noise
                output = model_engine._do_iteration(batch(rank, step), loss_fns)
                losses.append({key: float(value) for key, value in output.data_dict.items()})
                optimizer.step()
            parameters = torch.cat([p.detach().flatten() for p in model_engine.model.parameters()])
            gathered = [torch.empty_like(parameters) for _ in range(world_size)]
            dist.all_gather(gathered, parameters)
            moved = [not torch.equal(a, p) for a, p in zip(initial, model_engine.model.parameters())]
            results[(rank, name)] = {
                "identical": all(torch.equal(gathered[0], g) for g in gathered),
                "all_moved": all(moved),
                "losses": losses,
            }
    finally:
        dist.destroy_process_group()


def test_every_plugin_model_trains_under_ddp_and_stays_identical_across_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world_size = 2
    results = mp.Manager().dict()
    mp.spawn(train_every_model, args=(world_size, f"tcp://127.0.0.1:{port}", results), nprocs=world_size)
    for name, (_, _, _, _, losses) in MODELS.items():
        for rank in range(world_size):
            result = results[(rank, name)]
            assert result["identical"], f"{name}: the ranks' parameters differ after {STEPS} steps"
            assert result["all_moved"], f"{name}: a parameter was not updated"
            for step in result["losses"]:
                assert set(losses) <= set(step) and all(torch.isfinite(torch.tensor(list(step.values()))))
        # The ranks trained on other data: equal parameters come from DDP's averaged gradients, not equal inputs.
        assert results[(0, name)]["losses"] != results[(1, name)]["losses"], name
