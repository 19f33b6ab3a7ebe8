import math

import pytest
import torch
import torch.nn.functional as F

from recsys.nn.losses import (
    LOSSES,
    action_ce,
    bce,
    chunked_ce,
    full_ce,
    gbce,
    gbce_beta,
    kept_positions,
    prior_logit_offset,
    purchase_bce,
    sampled_softmax,
)


def test_full_ce_matches_naive_reference_values_and_gradients():
    torch.manual_seed(0)
    B, L, D, n = 3, 4, 5, 7
    hidden = torch.randn(B, L, D, requires_grad=True)
    weights = torch.randn(n, D, requires_grad=True)
    targets = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [6, 7, 1, 2]])
    loss = full_ce(hidden, weights, targets)
    loss.backward()
    g_h, g_w = hidden.grad.clone(), weights.grad.clone()

    h2 = hidden.detach().clone().requires_grad_()
    w2 = weights.detach().clone().requires_grad_()
    terms = []
    for b in range(B):
        for j in range(L):
            t = int(targets[b, j])
            if t == 0:
                continue
            logits = w2 @ h2[b, j]  # (n,)
            terms.append(-F.log_softmax(logits, dim=0)[t - 1])
    ref = torch.stack(terms).mean()
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(g_h, h2.grad, atol=1e-6)
    assert torch.allclose(g_w, w2.grad, atol=1e-6)
    # padding positions receive no gradient
    assert g_h[0, :2].abs().sum() == 0


def test_fused_ce_equals_autograd_reference_on_a_larger_case():
    from recsys.nn.losses import full_ce_reference

    torch.manual_seed(1)
    hidden = torch.randn(5, 30, 8, requires_grad=True)  # N > the row block of the fused kernel
    weights = torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 51, (5, 30))
    grads = []
    for fn in (full_ce, full_ce_reference):
        hidden.grad = weights.grad = None
        loss = fn(hidden, weights, targets)
        loss.backward()
        grads.append((loss.detach(), hidden.grad.clone(), weights.grad.clone()))
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, atol=1e-5)


# ---- the other losses, each against a naive per-position loop ----------------------------

def _case(seed=0, B=3, L=4, D=5, n=9):
    torch.manual_seed(seed)
    hidden = torch.randn(B, L, D, requires_grad=True)
    weights = torch.randn(n, D, requires_grad=True)
    targets = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [6, 7, 1, 9]])
    return hidden, weights, targets


def _grads(fn, hidden, weights):
    hidden.grad = weights.grad = None
    loss = fn(hidden, weights)
    loss.backward()
    return loss.detach(), hidden.grad.clone(), weights.grad.clone()


def _positions(targets):
    return [(b, j) for b in range(targets.shape[0]) for j in range(targets.shape[1]) if targets[b, j] != 0]


def _neg_ids(negatives, b, j):
    return negatives.tolist() if negatives.ndim == 1 else negatives[b, j].tolist()


def _naive_sampled(h, w, targets, negatives, log_q=None):
    terms = []
    for b, j in _positions(targets):
        t = int(targets[b, j])
        ids = _neg_ids(negatives, b, j)
        lq = None if log_q is None else (log_q.tolist() if log_q.ndim == 1 else log_q[b, j].tolist())
        logits = [h[b, j] @ w[t - 1]]
        for k, i in enumerate(ids):
            if i == t:  # accidental hit: dropped
                continue
            s = h[b, j] @ w[i - 1]
            if lq is not None:
                s = s - (lq[k] + math.log(len(ids)))
            logits.append(s)
        terms.append(-torch.log_softmax(torch.stack(logits), dim=0)[0])
    return torch.stack(terms).mean()


def _naive_binary(h, w, targets, negatives, beta=1.0, normalise=False):
    terms = []
    for b, j in _positions(targets):
        t = int(targets[b, j])
        ids = _neg_ids(negatives, b, j)
        term = -beta * torch.log(torch.sigmoid(h[b, j] @ w[t - 1]))
        for i in ids:
            if i != t:
                term = term - torch.log(1 - torch.sigmoid(h[b, j] @ w[i - 1]))
        terms.append(term / (len(ids) + 1) if normalise else term)
    return torch.stack(terms).mean()


def _assert_same(fn, ref, hidden, weights, atol=1e-5):
    for got, want in zip(_grads(fn, hidden, weights), _grads(ref, hidden, weights)):
        assert torch.allclose(got, want, atol=atol), (got, want)


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
def test_chunked_ce_equals_full_ce_in_value_and_gradient(chunk):
    torch.manual_seed(2)
    hidden = torch.randn(4, 30, 8, requires_grad=True)
    weights = torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 51, (4, 30))
    _assert_same(lambda h, w: chunked_ce(h, w, targets, chunk_size=chunk),
                 lambda h, w: full_ce(h, w, targets), hidden, weights)


def test_chunked_ce_gradient_follows_the_weight_the_loss_enters_with():
    """The gradients are formed in forward; backward must still scale them by the incoming one."""
    torch.manual_seed(4)
    hidden = torch.randn(3, 10, 8, requires_grad=True)
    weights = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 31, (3, 10))
    _assert_same(lambda h, w: -2.5 * chunked_ce(h, w, targets, chunk_size=4),
                 lambda h, w: -2.5 * full_ce(h, w, targets), hidden, weights)


def test_chunked_ce_without_gradients_gives_the_loss_alone():
    torch.manual_seed(5)
    hidden, weights = torch.randn(2, 6, 4), torch.randn(12, 4)
    targets = torch.randint(1, 13, (2, 6))
    loss = chunked_ce(hidden, weights, targets, chunk_size=5)
    assert not loss.requires_grad
    assert torch.allclose(loss, full_ce(hidden, weights, targets))


@pytest.mark.parametrize("loss", ["ce", "ce_chunked"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_full_softmax_losses_take_positions_already_selected(loss, precision):
    """(N, D) hidden states with (N,) targets, as the training step hands them over, give
    the same loss and gradients as the (B, L, D) form they were selected from."""
    torch.manual_seed(6)
    hidden = torch.randn(3, 7, 8)
    weights = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(1, 31, (3, 7))
    targets[0, :4] = 0
    keep = targets != 0
    out = []
    for h, t in ((hidden, targets), (hidden[keep], targets[keep])):
        h = h.clone().requires_grad_()
        weights.grad = None
        value = LOSSES[loss].fn(h, weights, t, precision=precision)
        value.backward()
        out.append((value.detach(), h.grad[keep] if h.ndim == 3 else h.grad, weights.grad.clone()))
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_kept_positions_selects_passes_through_and_checks_shapes():
    hidden, targets = torch.randn(2, 3, 4), torch.tensor([[0, 5, 6], [7, 0, 8]])
    h, t = kept_positions(hidden, targets)
    assert torch.equal(t, torch.tensor([5, 6, 7, 8])) and torch.equal(h, hidden[targets != 0])
    h2, t2 = kept_positions(h, t)
    assert h2 is h and t2 is t  # already selected: no copy
    h3, t3 = kept_positions(h, torch.tensor([5, 0, 7, 8]))  # a PAD among them is still dropped
    assert torch.equal(t3, torch.tensor([5, 7, 8])) and torch.equal(h3, h[[0, 2, 3]])
    with pytest.raises(ValueError, match="does not match targets"):
        kept_positions(hidden, t)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunked_ce_bounds_the_logit_block(precision):
    """No (rows x V) block larger than chunk_size x V is materialised: checked by
    recording every matmul output the loss allocates."""
    torch.manual_seed(3)
    hidden = torch.randn(2, 40, 4, requires_grad=True)
    weights = torch.randn(100, 4, requires_grad=True)
    targets = torch.randint(1, 101, (2, 40))
    seen = []
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == 100:
                seen.append(out.shape[0])
            return out

    with Record():
        chunked_ce(hidden, weights, targets, chunk_size=16, precision=precision).backward()
    assert seen and max(seen) <= 16


def test_chunked_bf16_ce_runs_its_products_on_few_row_counts():
    """The bf16 path pads its last chunk to a multiple of ``ROW_BUCKET`` rows, so every
    (rows x V) product has one of chunk / ROW_BUCKET row counts, whatever the batch's number
    of target positions (oneDNN builds a kernel per shape); the padding rows take no share
    in the loss or the gradients."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from recsys.nn.kernels.softmax_ce import ROW_BUCKET

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket is torch.ops.aten.mm and out.shape[1] == 100:  # (rows, V) logits
                seen.append(out.shape[0])
            return out

    torch.manual_seed(4)
    weights = torch.randn(100, 8)
    for n in (3, 45, 64, 101):
        hidden = torch.randn(n, 1, 8)
        targets = torch.randint(1, 101, (n, 1))
        seen = []
        h, w = hidden.clone().requires_grad_(), weights.clone().requires_grad_()
        with Record():
            loss = chunked_ce(h, w, targets, chunk_size=2 * ROW_BUCKET, precision="bf16")
            loss.backward()
        assert seen and all(rows % ROW_BUCKET == 0 for rows in seen), (n, seen)
        # each row on its own (a one-row batch, padded the most): the same loss and gradients
        rows = []
        for j in range(n):
            hj, wj = hidden[j : j + 1].clone().requires_grad_(), weights.clone().requires_grad_()
            chunked_ce(hj, wj, targets[j : j + 1], precision="bf16").backward()
            rows.append((hj.grad, wj.grad))
        losses = [chunked_ce(hidden[j : j + 1], weights, targets[j : j + 1], precision="bf16") for j in range(n)]
        assert float(loss) == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
        # bf16 gradient products, rounded apart: equal up to a few bf16 roundings
        for got, ref in ((h.grad, torch.cat([g for g, _ in rows]) / n), (w.grad, sum(g for _, g in rows) / n)):
            assert (got - ref).norm() / ref.norm() < 4 * 2**-9


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("with_log_q", [True, False])
def test_sampled_softmax_matches_naive_loop(shared, with_log_q):
    hidden, weights, targets = _case()
    g = torch.Generator().manual_seed(0)
    shape = (6,) if shared else (*targets.shape, 6)
    negatives = torch.randint(1, 10, shape, generator=g)
    negatives.view(-1)[0] = int(targets[0, 2]) if not shared else 1  # force an accidental hit
    log_q = torch.rand(shape, generator=g).log() if with_log_q else None
    _assert_same(lambda h, w: sampled_softmax(h, w, targets, negatives, log_q),
                 lambda h, w: _naive_sampled(h, w, targets, negatives, log_q), hidden, weights)


def test_sampled_softmax_with_every_item_once_and_uniform_q_is_full_ce():
    """logQ correction makes the sampled loss an estimate of full CE; with all n items as
    negatives under q = 1/n it is exact (the target's own copy is dropped as a hit)."""
    hidden, weights, targets = _case()
    everything = torch.arange(1, 10)
    log_q = torch.full((9,), -math.log(9))
    got = sampled_softmax(hidden, weights, targets, everything, log_q)
    assert torch.allclose(got, full_ce(hidden, weights, targets), atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_bce_matches_naive_loop(shared):
    hidden, weights, targets = _case(1)
    g = torch.Generator().manual_seed(1)
    negatives = torch.randint(1, 10, (4,) if shared else (*targets.shape, 1), generator=g)
    _assert_same(lambda h, w: bce(h, w, targets, negatives),
                 lambda h, w: _naive_binary(h, w, targets, negatives), hidden, weights)


def test_gbce_beta_calibration_values():
    assert gbce_beta(0.0, 256, 12102) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(1.0, 256, 12102) == pytest.approx(256 / 12101)  # t = 1: beta = alpha
    alpha = 256 / 12101
    assert gbce_beta(0.75, 256, 12102) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))


@pytest.mark.parametrize("t", [0.0, 0.5, 0.75, 1.0])
def test_gbce_matches_naive_loop_and_the_reference_transform(t):
    hidden, weights, targets = _case(2)
    g = torch.Generator().manual_seed(2)
    negatives = torch.randint(1, 10, (*targets.shape, 3), generator=g)
    beta = gbce_beta(t, 3, 9)
    _assert_same(lambda h, w: gbce(h, w, targets, negatives, t=t),
                 lambda h, w: _naive_binary(h, w, targets, negatives, beta=beta, normalise=True), hidden, weights)
    # gSASRec's code instead feeds BCE the positive logit log(1 / (sigmoid(s)^-beta - 1));
    # without accidental hits the two are the same number.
    clean = torch.where(negatives == targets[..., None], (negatives % 9) + 1, negatives)
    clean = torch.where(clean == targets[..., None], (clean % 9) + 1, clean)
    keep = targets != 0
    h = hidden.detach()[keep]
    pos = (h * weights.detach()[targets[keep] - 1]).sum(-1, dtype=torch.float64)
    neg = torch.einsum("nd,nkd->nk", h, weights.detach()[clean[keep] - 1]).double()
    transformed = torch.log(1.0 / (torch.sigmoid(pos) ** -beta - 1.0))
    logits = torch.cat([transformed[:, None], neg], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert gbce(hidden, weights, targets, clean, t=t).item() == pytest.approx(ref.item(), abs=1e-5)


def test_gbce_with_t_zero_is_bce_over_k_plus_one():
    hidden, weights, targets = _case(3)
    negatives = torch.randint(1, 10, (*targets.shape, 4), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(gbce(hidden, weights, targets, negatives, t=0.0), bce(hidden, weights, targets, negatives) / 5)


def test_action_and_purchase_losses_skip_unlabelled_positions():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3)
    next_events = torch.tensor([[0, 2]])  # first position unlabelled
    expected = -torch.log_softmax(torch.tensor([0.0, 1.0, 0.0]), 0)[1]
    assert torch.allclose(action_ce(logits, next_events), expected)
    p_logits = torch.tensor([[0.3, -1.2, 5.0]])
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    want = -(math.log(torch.sigmoid(torch.tensor(0.3)).item()) + math.log(1 - torch.sigmoid(torch.tensor(-1.2)).item())) / 2
    assert purchase_bce(p_logits, labels).item() == pytest.approx(want, abs=1e-6)
    assert action_ce(logits, torch.zeros(1, 2, dtype=torch.long)).item() == 0.0


def test_registry_matches_config_names():
    from recsys.config import LOSS_NAMES

    assert set(LOSSES) == set(LOSS_NAMES)


@pytest.mark.parametrize("chunk", [None, 7, 1000])
def test_bf16_logit_products_stay_close_to_fp32(chunk):
    """``ce`` (chunk None) and ``ce_chunked`` at ``precision=bf16``: close to fp32, not equal to it."""
    from recsys.nn.losses import full_ce

    torch.manual_seed(2)
    hidden = torch.randn(4, 20, 16, requires_grad=True)
    weights = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 301, (4, 20))
    out = {}
    for precision in ("fp32", "bf16"):
        hidden.grad = weights.grad = None
        if chunk is None:
            loss = full_ce(hidden, weights, targets, precision=precision)
        else:
            loss = chunked_ce(hidden, weights, targets, chunk_size=chunk, precision=precision)
        loss.backward()
        out[precision] = (loss.detach(), hidden.grad.clone(), weights.grad.clone())
    (l32, gh32, gw32), (l16, gh16, gw16) = out["fp32"], out["bf16"]
    assert l16.dtype == torch.float32 and gh16.dtype == torch.float32 and gw16.dtype == torch.float32
    assert torch.allclose(l16, l32, rtol=2e-2)
    assert not torch.equal(l16, l32)  # bf16 really was used
    for a, b in ((gh16, gh32), (gw16, gw32)):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_bf16_ce_is_the_softmax_of_bf16_logits(chunk):
    """The bf16 path is the cross-entropy of the bf16 logits up to the rounding of its
    softmax and gradient products to bf16: against that cross-entropy, worked out in float64
    from the same bf16 logits, each row's loss is within 2^-8 and the gradients within a few
    bf16 roundings (2^-9 each)."""
    torch.manual_seed(6)
    hidden = torch.randn(3, 25, 16, requires_grad=True)
    weights = torch.randn(200, 16, requires_grad=True)
    targets = torch.randint(0, 201, (3, 25))
    keep = targets != 0
    h_lo, w_lo = hidden.detach()[keep].bfloat16(), weights.detach().bfloat16()
    logits = (h_lo @ w_lo.T).double().requires_grad_()  # the bf16 product's output, as the loss sees it
    rows = torch.nn.functional.cross_entropy(logits, targets[keep] - 1, reduction="none")
    (d_logits,) = torch.autograd.grad(rows.mean(), logits)
    ref_grads = (d_logits @ w_lo.double(), d_logits.T @ h_lo.double())

    loss = chunked_ce(hidden, weights, targets, chunk_size=chunk, precision="bf16")
    assert abs(loss.item() - rows.mean().item()) < 2**-8
    single = [chunked_ce(hidden.detach()[keep][j : j + 1, None], weights.detach(), targets[keep][j : j + 1, None],
                         precision="bf16") for j in range(int(keep.sum()))]
    assert (torch.stack(single).double() - rows.detach()).abs().max() <= 2**-8
    grad_h, grad_w = torch.autograd.grad(loss, (hidden, weights))
    for got, ref in ((grad_h[keep], ref_grads[0]), (grad_w, ref_grads[1])):
        assert got.dtype == torch.float32
        assert (got.double() - ref).norm() / ref.norm() < 4 * 2**-9


def test_chunked_bf16_ce_loss_stays_exact_when_the_target_probability_underflows():
    """A target logit ~200 below the row's maximum has a softmax probability of 0 even in
    bf16 (whose range is fp32's): its loss is the exact log-sum-exp difference, not inf."""
    weights = torch.zeros(5, 4)
    weights[0, 0], weights[1, 0] = 100.0, -100.0
    hidden = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]])
    targets = torch.tensor([[2, 3]])  # item 2 (row 1): logit -100 against 100; item 3: logit 0
    loss = chunked_ce(hidden, weights, targets, precision="bf16")
    logits = hidden[0] @ weights.T
    want = torch.nn.functional.cross_entropy(logits, targets[0] - 1)
    assert torch.isfinite(loss)
    assert abs(loss.item() - want.item()) < 1e-3 * want.item()


def test_chunked_ce_rejects_an_unknown_precision():
    hidden, weights, targets = _case()
    with pytest.raises(ValueError, match="precision must be one of"):
        chunked_ce(hidden, weights, targets, precision="fp16")


@pytest.mark.parametrize("loss, k", [("gbce", 5), ("bce", 3)])
def test_prior_offset_adds_the_optimal_constant_to_every_score(loss, k):
    hidden, weights, targets = _case(4)
    negatives = torch.randint(1, 10, (*targets.shape, k), generator=torch.Generator().manual_seed(4))
    fn, kw = (gbce, {"t": 0.75}) if loss == "gbce" else (bce, {})
    beta = gbce_beta(0.75, k, 9) if loss == "gbce" else 1.0
    c = prior_logit_offset(beta, k)
    assert c == pytest.approx(math.log(beta / k))
    # the same as a model with one more input dimension, constant 1, whose item weight is c
    h1 = torch.cat([hidden, torch.ones(*hidden.shape[:-1], 1)], -1)
    w1 = torch.cat([weights, torch.full((weights.shape[0], 1), c)], -1)
    assert torch.allclose(fn(hidden, weights, targets, negatives, prior_offset=True, **kw),
                          fn(h1, w1, targets, negatives, **kw), atol=1e-6)
    # and optimal among constants: with every score equal (0 + c), moving them all together gains nothing
    shift = torch.zeros(1, requires_grad=True)
    h0 = torch.cat([torch.zeros_like(hidden), torch.ones(*hidden.shape[:-1], 1)], -1)
    w0 = torch.cat([torch.zeros_like(weights), shift.expand(weights.shape[0], 1)], -1)
    clean = torch.where(negatives == targets[..., None], (negatives % 9) + 1, negatives)  # no accidental hits
    clean = torch.where(clean == targets[..., None], (clean % 9) + 1, clean)
    fn(h0, w0, targets, clean, prior_offset=True, **kw).backward()
    assert abs(shift.grad.item()) < 1e-6
    shift.grad = None
    fn(h0, w0, targets, clean, **kw).backward()  # without the offset, scores of 0 are pushed down
    assert shift.grad.item() > 1e-3


def test_prior_offset_is_zero_for_one_negative_bce():
    hidden, weights, targets = _case(5)
    negatives = torch.randint(1, 10, (*targets.shape, 1), generator=torch.Generator().manual_seed(5))
    assert prior_logit_offset(1.0, 1) == 0.0
    assert torch.equal(bce(hidden, weights, targets, negatives, prior_offset=True), bce(hidden, weights, targets, negatives))
