"""Training-step benchmark: graphconv's training step beside PyTorch's (CPU, eager), same model, batch, weights,
loss (cross-entropy) and optimizer (SGD, momentum 0.9, weight decay 5e-4), in one process.

    graphconv bench --train [MODEL ...] [--threads 2] [--min-time 2] [--train-backend llvm] [--json]
    python tools/bench.py --train ...

Models (shared/ANCHORS.md's rows): lenet5 (1×32×32, batch 64) and resnet18 (10 classes, 3×32×32, batch 32). The
PyTorch models are written out here as torchvision defines them and take graphconv's initial weights, so the first
step's losses must agree (checked and printed). Both sides are timed by alternating blocks of steps; the median
step time and the ratio graphconv / PyTorch are printed (below 1 is faster). PyTorch is an optional benchmark
dependency (`pip install torch`), never a runtime one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from .bench import _spec_path, _time_pair

# model -> (spec parameters, batch)
TRAIN_MODELS = {
    "lenet5": ({}, 64),
    "resnet18": ({"num_classes": 10, "size": 32}, 32),
}


@dataclass
class TrainRow:
    model: str
    batch: int
    threads: int
    backend: str
    graphconv_ms: float
    pytorch_ms: float
    ratio: float
    first_loss_graphconv: float
    first_loss_pytorch: float
    runs: int


def _torch_model(model: str, num_classes: int):
    import torch.nn as nn

    if model == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, num_classes))

    class Basic(nn.Module):
        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.down = None
            if stride != 1 or cin != c:
                self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(y + (x if self.down is None else self.down(x)))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for c, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Basic(cin, c, stride), Basic(c, c, 1)]
        cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def _load_into_torch(tmodel, net) -> None:
    """graphconv's weights into the PyTorch model, in definition order (shapes checked one by one)."""
    import torch

    ours = [(n, net.weights[n]) for n in net.graph.params]
    theirs = [(k, v) for k, v in tmodel.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(ours) != len(theirs):
        raise RuntimeError(f"{len(ours)} graphconv parameters against {len(theirs)} PyTorch tensors")
    state = {}
    for (name, arr), (key, ref) in zip(ours, theirs):
        if tuple(arr.shape) != tuple(ref.shape):
            raise RuntimeError(f"{name} {arr.shape} does not match PyTorch's {key} {tuple(ref.shape)}")
        state[key] = torch.from_numpy(np.ascontiguousarray(arr, np.float32))
    tmodel.load_state_dict(state, strict=False)


def bench_train(model: str, threads: int, min_time: float, backend: str = "llvm") -> TrainRow:
    try:
        import torch
    except ImportError:
        from .errors import GraphconvError

        raise GraphconvError("the training benchmark compares with PyTorch: pip install torch") from None
    import graphconv
    from .train.autodiff import Loss
    from .train.optim import Optimizer
    from .train.step import TrainStep

    params, batch = TRAIN_MODELS.get(model, ({}, 32))
    net = graphconv.load(_spec_path(model), seed=0, **params)
    (inp,) = net.graph.inputs
    (out,) = [o for o in net.graph.outputs][:1]
    classes = int(net.graph.outputs[out].type.shape[1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(inp.type.concrete(batch)).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    onehot = np.eye(classes, dtype=np.float32)[labels]
    lr = 0.01
    opt = Optimizer("sgd", momentum=0.9, weight_decay=5e-4)
    step = TrainStep(net, [Loss(out)], opt, backend=backend, threads=threads)

    torch.set_num_threads(threads)
    tmodel = _torch_model(model, classes)
    _load_into_torch(tmodel, net)
    tmodel.train()
    topt = torch.optim.SGD(tmodel.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(labels)

    def torch_step() -> float:
        topt.zero_grad(set_to_none=True)
        loss = loss_fn(tmodel(tx), ty)
        loss.backward()
        topt.step()
        return float(loss.detach())

    first_ours = step.run({inp.name: x}, {out: onehot}, lr).loss
    first_theirs = torch_step()
    ta, tb = _time_pair(lambda: step.run({inp.name: x}, {out: onehot}, lr), torch_step, min_time)
    ours_ms, theirs_ms = statistics.median(ta) * 1e3, statistics.median(tb) * 1e3
    return TrainRow(model, batch, threads, backend, ours_ms, theirs_ms, ours_ms / theirs_ms, first_ours,
                    first_theirs, len(ta))


def format_train_table(rows: list[TrainRow]) -> str:
    head = (f"{'model':<12}{'batch':>6}{'thr':>4}{'backend':>10}{'graphconv ms':>14}{'pytorch ms':>12}{'ratio':>7}"
            f"{'first loss (ours / torch)':>28}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model:<12}{r.batch:>6}{r.threads:>4}{r.backend:>10}{r.graphconv_ms:>14.2f}"
                     f"{r.pytorch_ms:>12.2f}{r.ratio:>7.2f}{r.first_loss_graphconv:>16.5f} / "
                     f"{r.first_loss_pytorch:.5f}")
    return "\n".join(lines)
