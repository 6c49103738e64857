"""Moving averages of weights (components/nets/ema.py) and G_ema in the noise-to-image families that offer it."""

import pytest
import torch
from torch import nn

from components.errors import ConfigError
from components.families import DataSpec, build_family
from components.nets.ema import WeightAverage, WithEMA, ema_decay_at, ema_update_, with_generator_average
from components.training.loop import run_iteration
from components.training.sampler import ShardSampler


def test_ema_update_by_hand():
    average, value = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    ema_update_([average], [value], 0.999)  # 0.999 * (0, 1) + 0.001 * (1, 1)
    torch.testing.assert_close(average, torch.tensor([0.001, 1.0]))


@pytest.mark.parametrize("step, expected", [(0, 0.1), (90, 0.91), (8990, 0.999), (10**6, 0.999)])
def test_ema_decay_warms_up_to_the_papers(step, expected):
    # min(0.999, (1 + t) / (10 + t)): 1/10, 91/100, 8991/9000 = 0.999, capped after
    assert ema_decay_at(step, 0.999) == pytest.approx(expected)
    assert ema_decay_at(step, 0.999, warmup=False) == 0.999


def test_ema_copy_is_buffers_updated_towards_the_weights():
    tracked = WithEMA(nn.Linear(1, 1))
    assert [name for name, _ in tracked.named_parameters()] == ["net.weight", "net.bias"]  # no EMA parameters
    assert {"ema.weight", "ema.bias", "steps"} <= set(dict(tracked.named_buffers()))
    with torch.no_grad():
        tracked.net.weight.fill_(1.0)
        tracked.ema.weight.fill_(0.0)
    tracked.update_ema(0.999)  # 0.999 * 0 + 0.001 * 1
    assert tracked.ema.weight.item() == pytest.approx(0.001)
    with torch.no_grad():
        tracked.net.weight.fill_(2.0)
    tracked.update_ema(0.999)  # 0.999 * 0.001 + 0.001 * 2
    assert tracked.ema.weight.item() == pytest.approx(0.002999)
    assert int(tracked.steps) == 2
    with torch.no_grad():
        tracked.ema.bias.copy_(tracked.net.bias)
    torch.testing.assert_close(tracked.ema(torch.tensor([[3.0]])), 0.002999 * 3 + tracked.net.bias.detach().view(1, 1))


def test_weight_average_lerps_weights_and_copies_batch_norm_statistics_by_hand():
    net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    average = WeightAverage(net)
    assert list(average.parameters()) == []  # nothing for an optimizer or DDP to train
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        average.average[0].weight.fill_(0.0)
        net[1].running_mean.fill_(3.0)
    average.update(net, 0.999)  # warm-up: decay min(0.999, 1/10) = 0.1, so 0.1 * 0 + 0.9 * 1
    assert average.average[0].weight.item() == pytest.approx(0.9)
    assert average.average[1].running_mean.item() == 3.0  # copied, not averaged
    average.update(net, 0.5, warmup=False)  # 0.5 * 0.9 + 0.5 * 1
    assert average.average[0].weight.item() == pytest.approx(0.95)
    assert int(average.updates) == 2


def test_no_average_unless_asked_and_a_bad_decay_is_refused():
    nets = {"G": nn.Linear(1, 1), "D": nn.Linear(1, 1)}
    assert with_generator_average(nets, 0.0) is nets
    assert set(with_generator_average(nets, 0.99)) == {"G", "D", "G_ema"}
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        build_family("dcgan", DataSpec(1, 16), {"ema_decay": 1.0})


@pytest.mark.parametrize("name, spec", [("dcgan", DataSpec(1, 16)), ("wgan_gp", DataSpec(1, 16)),
                                        ("cgan", DataSpec(1, 16, num_classes=3))])
def test_g_ema_follows_g_after_each_g_step_and_is_what_generate_and_export_run(name, spec):
    torch.manual_seed(0)
    family = build_family(name, spec, {"ema_decay": 0.9, **({"n_critic": 1} if name == "wgan_gp" else {})})
    g, g_ema = family.nets["G"], family.nets["G_ema"]
    assert set(family.build_optimizers()) == {"G", "D"}
    torch.testing.assert_close(g_ema.average.state_dict(), g.state_dict())  # starts at G's weights
    images, labels = torch.rand(8, 1, 16, 16) * 2 - 1, torch.arange(8) % 3
    sampler = ShardSampler(images.numpy(), labels.numpy() if name == "cgan" else None, 0, 1, 4, 0)
    nets, phases = dict(family.nets.items()), family.phases()
    optimizers = family.build_optimizers()
    for step in range(3):
        run_iteration(step, phases, nets, optimizers, sampler, torch.device("cpu"))
    assert int(g_ema.updates) == 3  # one per G step
    g_weights = dict(g.named_parameters())
    moved = [name for name, value in g_ema.average.named_buffers()
             if name in g_weights and not torch.equal(value, g_weights[name])]
    assert moved  # an average lags G's weights
    family.nets.eval()
    torch.manual_seed(1)
    sampled = family.generate(4, torch.arange(4) % 3 if name == "cgan" else None)
    torch.manual_seed(1)
    expected = g_ema(torch.randn(4, family.config.z_dim), *((torch.arange(4) % 3,) if name == "cgan" else ()))
    torch.testing.assert_close(sampled, expected)
    assert family.export_generator().generator is g_ema


def test_g_ema_is_checkpointed_with_the_other_networks(tmp_path):
    from components.training.checkpoint import TrainingState, restore_into, save_checkpoint

    family = build_family("dcgan", DataSpec(1, 16), {"ema_decay": 0.9})
    with torch.no_grad():
        for buffer in family.nets["G_ema"].average.buffers():
            buffer.fill_(0.25)  # unlike any initialisation
    family.nets["G_ema"].updates += 7
    save_checkpoint(tmp_path, family, family.build_optimizers(), TrainingState(step=7))
    restored = build_family("dcgan", DataSpec(1, 16), {"ema_decay": 0.9})
    restore_into(tmp_path, restored, restored.build_optimizers())
    torch.testing.assert_close(restored.nets["G_ema"].state_dict(), family.nets["G_ema"].state_dict())
    assert int(restored.nets["G_ema"].updates) == 7
