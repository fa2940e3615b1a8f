import math

import pytest
import torch
from segmentation_models_pytorch.losses import TverskyLoss

from lib.data.labels import IGNORE_INDEX
from lib.train.loss import FocalTverskyLoss


def random_batch(seed=0, water=0.3):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(4, 1, 32, 32, generator=g) < water).to(torch.uint8)
    logits = torch.randn(4, 1, 32, 32, generator=g) * 2
    return logits, target


def test_gamma_one_is_plain_tversky_as_in_smp():
    logits, target = random_batch()
    ours = FocalTverskyLoss(alpha=0.3, beta=0.7, gamma=1.0, smooth=0.0)(logits, target)
    smp_loss = TverskyLoss(mode="binary", from_logits=True, alpha=0.3, beta=0.7, gamma=1.0)(logits, target.float())
    assert torch.allclose(ours, smp_loss, atol=1e-6)


def test_gamma_is_a_real_exponent():
    logits, target = random_batch()
    plain = FocalTverskyLoss(gamma=1.0)(logits, target)
    focal = FocalTverskyLoss(gamma=0.75)(logits, target)
    assert torch.allclose(focal, plain ** 0.75, atol=1e-6)


def test_perfect_prediction_gives_about_zero():
    _, target = random_batch()
    logits = torch.where(target == 1, 30.0, -30.0)
    assert FocalTverskyLoss()(logits, target) < 1e-3


def test_dry_batch_penalizes_false_positives_and_has_finite_gradients():
    target = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    loss_fn = FocalTverskyLoss(gamma=0.5)
    perfect = torch.full((2, 1, 16, 16), -30.0, requires_grad=True)
    wrong = torch.full((2, 1, 16, 16), 3.0, requires_grad=True)
    assert loss_fn(perfect, target) < 1e-3
    assert loss_fn(wrong, target) > 0.5  # smp's TverskyLoss returns 0 here
    for logits in (perfect, wrong):
        loss_fn(logits, target).backward()
        assert torch.isfinite(logits.grad).all()


def test_ignored_pixels_do_not_count():
    logits, target = random_batch()
    ignored = target.clone()
    ignored[:, :, :8] = IGNORE_INDEX
    changed = logits.clone()
    changed[:, :, :8] = torch.randn(4, 1, 8, 32) * 10
    loss_fn = FocalTverskyLoss()
    assert torch.allclose(loss_fn(logits, ignored), loss_fn(changed, ignored))
    assert not torch.allclose(loss_fn(logits, target), loss_fn(changed, target))


@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7)])
def test_false_negatives_cost_more_than_false_positives(alpha, beta):
    target = torch.zeros(1, 1, 10, 10, dtype=torch.uint8)
    target[..., :5, :] = 1  # 50 water pixels
    base = torch.where(target == 1, 30.0, -30.0)
    missed, extra = base.clone(), base.clone()
    missed[..., 0, :] = -30.0  # 10 false negatives
    extra[..., 9, :] = 30.0    # 10 false positives
    loss_fn = FocalTverskyLoss(alpha=alpha, beta=beta, gamma=1.0)
    assert loss_fn(missed, target) > loss_fn(extra, target)


def test_sums_equal_smp_soft_tversky_score_in_value_and_gradient():
    from segmentation_models_pytorch.losses._functional import soft_tversky_score
    logits, target = random_batch(seed=5)
    target[:, :, :4] = IGNORE_INDEX
    ours_logits, smp_logits = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = FocalTverskyLoss()(ours_logits, target)
    probability = torch.sigmoid(smp_logits) * (target != IGNORE_INDEX)
    score = soft_tversky_score(probability, (target == 1).float(), 0.3, 0.7, 1.0, 1e-7)
    reference = (1 - score) ** 0.75
    ours.backward()
    reference.backward()
    assert torch.allclose(ours, reference, atol=1e-6)
    assert torch.allclose(ours_logits.grad, smp_logits.grad, atol=1e-9, rtol=1e-4)


def test_bce_term_by_hand_and_no_data_ignored():
    """FocalTverskyBCE = Focal Tversky + w * mean BCE over the labelled pixels (no-data left out)."""
    from lib.train.loss import FocalTverskyBCE
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 5.0]]]])
    target = torch.tensor([[[[1, 0], [0, 255]]]], dtype=torch.uint8)
    ftl = FocalTverskyLoss()
    # BCE(0, 1) = ln 2, BCE(2, 0) = ln(1 + e^2), BCE(-1, 0) = ln(1 + e^-1); the 255 pixel is ignored
    bce = (math.log(2) + math.log(1 + math.e ** 2) + math.log(1 + math.e ** -1)) / 3
    loss = FocalTverskyBCE(ftl, bce_weight=0.5)(logits, target)
    assert float(loss) == pytest.approx(float(ftl(logits, target)) + 0.5 * bce, rel=1e-6)


def test_supervised_loss_is_the_published_one_at_bce_weight_zero():
    from lib.train.loss import supervised_loss
    from lib.train.loss import FocalTverskyBCE
    assert type(supervised_loss({"BCE_WEIGHT": 0.0})) is FocalTverskyLoss
    assert type(supervised_loss({})) is FocalTverskyLoss  # DEFAULTS: the KOMPSAT-5 family keeps it
    combined = supervised_loss({"BCE_WEIGHT": 1.0, "FTL_BETA": 0.6})
    assert isinstance(combined, FocalTverskyBCE) and combined.tversky.beta == 0.6
