"""CubicGrid: interpolation, natural boundaries, constant/linear degenerate axes, autograd, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline
from tests.conftest import DEVICES

from cryowarp.base.grids import CubicGrid, natural_spline_weights_1d


def test_1d_matches_scipy_natural_cubic_spline():
    nodes = np.array([0.0, 1.0, 0.0, 1.0, 0.0, -2.0, 0.5])
    u = np.linspace(0, 1, 101)
    truth = CubicSpline(np.linspace(0, 1, nodes.size), nodes, bc_type="natural")(u)
    grid = CubicGrid((nodes.size,), values=torch.tensor(nodes[None], dtype=torch.float32))
    got = grid.evaluate(torch.tensor(u, dtype=torch.float32)[:, None])[:, 0]
    # float32 arithmetic on values of order 1
    np.testing.assert_allclose(got.detach().numpy(), truth, atol=1e-5)


def test_interpolates_node_values_in_3d():
    values = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    grid = CubicGrid((4, 3, 5), 2, values=values)
    at_nodes = grid.evaluate_product(grid.node_coords())
    torch.testing.assert_close(at_nodes.detach(), values, atol=1e-5, rtol=0)


def test_one_node_axis_is_constant_and_two_nodes_linear():
    grid = CubicGrid((1, 2), values=torch.tensor([[[1.0, 3.0]]]))
    coords = torch.tensor([[0.0, 0.0], [0.7, 0.25], [1.0, 1.0], [0.3, 0.5]])
    torch.testing.assert_close(grid.evaluate(coords)[:, 0].detach(), torch.tensor([1.0, 1.5, 3.0, 2.0]))


def test_scattered_and_product_evaluation_agree():
    gen = torch.Generator().manual_seed(1)
    grid = CubicGrid((3, 4, 5), 2, values=torch.randn(2, 3, 4, 5, generator=gen))
    axes = [torch.rand(3, generator=gen), torch.rand(2, generator=gen), torch.rand(4, generator=gen)]
    product = grid.evaluate_product(axes)  # (2, 3, 2, 4)
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    scattered = grid.evaluate(mesh)  # (3, 2, 4, 2)
    torch.testing.assert_close(scattered.detach(), torch.movedim(product, 0, -1).detach(), atol=1e-5, rtol=0)


def test_coords_outside_are_clamped_and_weights_sum_to_one():
    w = natural_spline_weights_1d(6, torch.tensor([-0.5, 0.0, 0.33, 1.0, 1.7]))
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    torch.testing.assert_close(w[0], w[1])
    torch.testing.assert_close(w[3], w[4])


def test_resampling_a_cubic_keeps_the_function():
    # a natural spline through samples of a straight line is that line, so resampling is exact
    line = torch.linspace(-1.0, 2.0, 3)[None]
    grid = CubicGrid((3,), values=line)
    finer = grid.resampled((9,))
    torch.testing.assert_close(finer.values.detach()[0], torch.linspace(-1.0, 2.0, 9), atol=1e-6, rtol=0)


def test_fitting_by_autograd_recovers_node_values():
    truth = CubicGrid((4, 3), values=torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(2)))
    coords = torch.rand(500, 2, generator=torch.Generator().manual_seed(3))
    target = truth.evaluate(coords).detach()
    fit = CubicGrid((4, 3))
    opt = torch.optim.LBFGS(fit.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((fit.evaluate(coords) - target) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    # a linear least-squares problem with 500 points for 12 unknowns: recovered to float32 precision
    torch.testing.assert_close(fit.values.detach(), truth.values.detach(), atol=1e-4, rtol=0)


def test_json_round_trip():
    grid = CubicGrid((2, 3, 4), 2, values=torch.randn(2, 2, 3, 4))
    back = CubicGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert back.resolution == (2, 3, 4)
    torch.testing.assert_close(back.values.detach(), grid.values.detach())


@pytest.mark.parametrize("device", DEVICES + ["meta"])
def test_grid_follows_device(device):
    grid = CubicGrid((3, 2), 2, device=device)
    out = grid.evaluate_product([torch.rand(4, device=device), torch.rand(5, device=device)])
    assert out.device.type == torch.device(device).type
    assert tuple(out.shape) == (2, 4, 5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="1-4 axes"):
        CubicGrid((2, 2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"expected shape \(2, 3\)"):
        CubicGrid((3,), 2, values=torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected coords \(\.\.\., 2\)"):
        CubicGrid((3, 3)).evaluate(torch.zeros(4, 3))
