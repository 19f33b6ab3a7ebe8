import torch
import torch.nn.functional as F

from recsys.nn.losses import full_ce


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
