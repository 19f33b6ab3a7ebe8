import pytest
import torch

from recsys.config import ModelConfig
from recsys.nn.encoder import SASRecEncoder, build_encoder


def _encoder(**kw):
    torch.manual_seed(0)
    enc = SASRecEncoder(n_items=20, dim=16, n_blocks=2, n_heads=2, max_len=8, dropout=0.0, **kw)
    return enc.eval()


def test_changing_a_later_position_leaves_earlier_outputs_unchanged():
    enc = _encoder()
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    y = x.clone()
    y[0, 5] = 19
    hx, hy = enc(x), enc(y)
    assert torch.allclose(hx[:, :5], hy[:, :5], atol=1e-6)
    assert not torch.allclose(hx[:, 5:], hy[:, 5:], atol=1e-3)


def test_bidirectional_mode_is_not_causal():
    enc = _encoder(causal=False)
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    y = x.clone()
    y[0, 5] = 19
    assert not torch.allclose(enc(x)[:, 2], enc(y)[:, 2], atol=1e-4)


def test_padding_does_not_change_real_outputs():
    """Left-padding a row further (a longer batch-mate) leaves its last state unchanged."""
    enc = _encoder()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 3, 4, 5]])
    assert torch.allclose(enc(short)[:, -1], enc(padded)[:, -1], atol=1e-6)


def test_padding_row_gives_finite_outputs_and_output_is_tied():
    enc = _encoder()
    h = enc(torch.tensor([[0, 0, 0, 1]]))
    assert torch.isfinite(h).all()
    assert enc.item_weights().data_ptr() == enc.item_emb.weight[1:].data_ptr()
    assert enc.item_weights().shape == (20, 16)


def test_untied_output_scores_with_its_own_table_and_leaves_the_inputs_alone():
    tied, untied = _encoder(), _encoder(tied_output=False)
    assert set(untied.state_dict()) == PLAIN_KEYS | {"out_emb.weight"}
    assert untied.item_weights().data_ptr() == untied.out_emb.weight[1:].data_ptr()
    assert untied.item_weights().shape == (20, 16)
    # the core is initialised before the output table, so the hidden states are the tied model's
    assert torch.equal(tied(X), untied(X))
    assert not torch.allclose(tied.item_weights(), untied.item_weights())
    # a loss on the output scores alone moves the output table, not the input table
    h = untied(X).detach()
    (h[:, -1] @ untied.item_weights().T).logsumexp(dim=1).sum().backward()
    assert untied.out_emb.weight.grad.abs().sum() > 0 and untied.item_emb.weight.grad is None
    assert build_encoder(ModelConfig(tied_output=False), 10).out_emb is not None


def test_config_defaults_equal_constructor_defaults():
    import inspect

    params = inspect.signature(SASRecEncoder).parameters
    cfg = ModelConfig()
    for name in ("dim", "n_blocks", "n_heads", "max_len", "dropout", "tied_output"):
        assert getattr(cfg, name) == params[name].default, name
    assert isinstance(build_encoder(cfg, 10), SASRecEncoder)


PLAIN_KEYS = {
    "item_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias",
    *(f"blocks.{i}.{name}" for i in range(2) for name in (
        "ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.out.weight", "attn.out.bias",
        "ln2.weight", "ln2.bias", "ffn.fc1.weight", "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias")),
}
X = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 9]])
EVENTS = torch.tensor([[0, 0, 1, 1, 2, 1, 3, 1], [1, 1, 1, 2, 2, 1, 1, 3]])
ATTRS = [[1 + i % 3, 4 + i % 2] for i in range(20)]


def test_plain_sasrec_state_dict_keys_are_stable():
    """recsys.inference loads SASRec weights by these names: optional parts add keys only when on."""
    assert set(_encoder().state_dict()) == PLAIN_KEYS


def test_positions_can_be_switched_off():
    torch.manual_seed(0)
    enc = SASRecEncoder(20, 16, 2, 2, 8, 0.0, use_positions=False).eval()
    assert set(enc.state_dict()) == PLAIN_KEYS - {"pos_emb.weight"}
    # Without positions, one attention block reads the history as a set: the last state
    # ignores the order of earlier items. With positions it does not.
    one = SASRecEncoder(20, 16, 1, 2, 8, 0.0, use_positions=False).eval()
    with_pos = SASRecEncoder(20, 16, 1, 2, 8, 0.0).eval()
    a, b = torch.tensor([[3, 4, 5, 9]]), torch.tensor([[5, 3, 4, 9]])
    assert torch.allclose(one(a)[:, -1], one(b)[:, -1], atol=1e-5)
    assert not torch.allclose(with_pos(a)[:, -1], with_pos(b)[:, -1], atol=1e-4)


def test_action_embedding_changes_the_output_and_is_off_by_default():
    enc = _encoder(n_events=3)
    assert set(enc.state_dict()) == PLAIN_KEYS | {"event_emb.weight"}
    other = EVENTS.clone()
    other[0, 4] = 3
    h1, h2 = enc(X, EVENTS), enc(X, other)
    assert not torch.allclose(h1[0, 4:], h2[0, 4:], atol=1e-4)  # the changed action and later positions move
    assert torch.allclose(h1[0, :4], h2[0, :4], atol=1e-6)  # causal: earlier ones do not
    assert torch.allclose(h1[1], h2[1], atol=1e-6)
    with torch.no_grad():
        enc.event_emb.weight.zero_()
    assert torch.allclose(enc(X, EVENTS), _encoder()(X), atol=1e-6)  # zero table == no actions
    try:
        enc(X)
    except ValueError as exc:
        assert "events" in str(exc)
    else:
        raise AssertionError("an action encoder must refuse inputs without actions")


def test_attribute_bag_changes_input_and_output_tables_consistently():
    enc = _encoder(item_attributes=ATTRS)
    assert set(enc.state_dict()) == PLAIN_KEYS | {"attr_emb.weight", "attr_ids", "attr_offsets"}
    table = enc.token_table()
    bag = enc.attr_emb.weight
    # item 1 (row 1) has attributes {1, 4}: its embedding is item row + mean of the two attribute rows
    assert torch.allclose(table[1], enc.item_emb.weight[1] + (bag[1] + bag[4]) / 2, atol=1e-6)
    assert torch.allclose(table[0], torch.zeros(16))  # PAD has no attributes and a zero row
    assert torch.allclose(enc.item_weights(), table[1:21])  # the output table is the same sum
    plain = _encoder()
    assert not torch.allclose(enc(X), plain(X), atol=1e-4)
    with torch.no_grad():
        enc.attr_emb.weight.zero_()
    assert torch.allclose(enc(X), plain(X), atol=1e-6)  # zero bag == attributes off


def test_bert4rec_registry_entry_is_the_bidirectional_encoder():
    from recsys.config import ENCODER_NAMES
    from recsys.nn.encoder import ENCODERS

    assert set(ENCODERS) == set(ENCODER_NAMES)
    cfg = ModelConfig(name="bert4rec", dim=16, n_blocks=1, n_heads=2, max_len=8)
    enc = build_encoder(cfg, 20)
    assert isinstance(enc, SASRecEncoder) and not enc.causal
    assert ENCODERS["bert4rec"].objective == "cloze" and ENCODERS["sasrec"].objective == "next"
    assert set(enc.state_dict()) == {k for k in PLAIN_KEYS if not k.startswith("blocks.1.")}


def test_action_heads_shapes():
    from recsys.nn.heads import ActionHeads

    heads = ActionHeads(16, 4, purchase=True)
    a, p = heads(torch.randn(2, 8, 16))
    assert a.shape == (2, 8, 4) and p.shape == (2, 8)
    assert ActionHeads(16, 4)(torch.randn(3, 16))[1] is None


def test_last_state_equals_the_full_forward_at_the_newest_position():
    """The serving path (one query row in the last block) against the full forward, for
    both masks, 1 and 3 blocks, action tokens, and rows padded to different lengths."""
    torch.manual_seed(1)
    inputs = torch.randint(1, 21, (6, 8))
    inputs[0, :5] = 0  # a short history
    inputs[1, :7] = 0  # a single item
    events = torch.randint(1, 4, (6, 8)) * (inputs != 0)
    for causal in (True, False):
        for n_blocks in (1, 3):
            torch.manual_seed(0)
            enc = SASRecEncoder(20, dim=16, n_blocks=n_blocks, n_heads=2, max_len=8, dropout=0.0,
                                causal=causal, n_events=3).eval()
            full = enc(inputs, events)[:, -1]
            fast = enc.last_state(inputs, events)
            assert fast.shape == (6, 16)
            torch.testing.assert_close(fast, full, atol=1e-6, rtol=1e-5)
            # The shortcut must still read every position: change the oldest item of row 2.
            changed = inputs.clone()
            changed[2, 0] = 1 + changed[2, 0] % 20
            assert not torch.allclose(enc.last_state(changed, events)[2], fast[2], atol=1e-4)


def _ragged_batch():
    """Left-padded rows of lengths 8, 1, 5, 0 (all padding), 3, 7, 2."""
    torch.manual_seed(5)
    lengths = [8, 1, 5, 0, 3, 7, 2]
    x = torch.zeros(len(lengths), 8, dtype=torch.long)
    for row, n in enumerate(lengths):
        if n:
            x[row, 8 - n :] = torch.randint(1, 21, (n,))
    return x


@pytest.mark.parametrize("groups", [2, 3, 7, 50])
@pytest.mark.parametrize("causal", [True, False])
def test_length_groups_give_the_same_outputs_at_real_positions(groups, causal):
    enc = _encoder(causal=causal, n_events=3)
    x = _ragged_batch()
    events = torch.where(x > 0, x % 3 + 1, torch.zeros_like(x))
    whole, grouped = enc(x, events), enc(x, events, length_groups=groups)
    real = x != 0
    assert grouped.shape == whole.shape
    assert torch.allclose(grouped[real], whole[real], atol=1e-5)
    assert torch.equal(grouped[~real], torch.zeros_like(grouped[~real]))


def test_length_bucket_rounds_each_groups_width_and_keeps_the_outputs():
    """``length_bucket`` widens each group's window to a multiple of the bucket (at most L),
    and the encoder then runs exactly those widths, with the same outputs."""
    from recsys.nn.kernels.grouped import group_by_length

    x = _ragged_batch()  # lengths 8, 1, 5, 0, 3, 7, 2 in width 8
    assert [w for _, w in group_by_length(x, 3)] == [2, 5, 8]
    assert [w for _, w in group_by_length(x, 3, bucket=3)] == [3, 6, 8]
    assert [w for _, w in group_by_length(x, 7, bucket=2)] == [2, 2, 2, 4, 6, 8, 8]
    enc = _encoder()
    whole = enc(x)
    widths, embed = [], enc._embed
    enc._embed = lambda inputs, events: widths.append(inputs.shape[1]) or embed(inputs, events)
    bucketed = enc(x, length_groups=3, length_bucket=3)
    assert widths == [3, 6, 8]
    real = x != 0
    assert torch.allclose(bucketed[real], whole[real], atol=1e-5)


def test_length_groups_give_the_same_loss_gradient():
    """Through a loss over the real positions, the parameters' gradients agree too."""
    x = _ragged_batch()
    grads = []
    for groups in (1, 3):
        enc = _encoder()
        enc.train()  # dropout is 0: training mode, deterministic
        h = enc(x, length_groups=groups)
        (h[x != 0] ** 2).sum().backward()
        grads.append({name: p.grad.clone() for name, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-4), name


@pytest.mark.parametrize("groups", [1, 3])
def test_positions_give_exactly_the_selected_rows_and_their_gradients(groups):
    """``positions=`` hands over ``forward(...)[positions]`` (row-major, zeros where a selected
    position is padding) without the (B, L, D) tensor; the values and every gradient are the
    same, bit for bit."""
    x = _ragged_batch()
    positions = x != 0
    positions[0, :3] = False  # a real position left out
    positions[1, 0] = True  # a padding position selected
    results = []
    for packed in (False, True):
        enc = _encoder()
        enc.train()  # dropout is 0: training mode, deterministic
        if packed:
            h = enc(x, length_groups=groups, positions=positions)
        else:
            h = enc(x, length_groups=groups)[positions]
        (h**2 * torch.arange(1, h.shape[0] + 1)[:, None]).sum().backward()
        results.append((h.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}))
    (h0, g0), (h1, g1) = results
    assert h1.shape == (int(positions.sum()), 16)
    assert torch.equal(h1, h0)
    assert g0.keys() == g1.keys()
    assert all(torch.equal(g0[n], g1[n]) for n in g0)
    if groups > 1:
        assert torch.equal(h1[int(positions[0].sum())], torch.zeros(16))  # row 1's padding position


def test_dropout_sampler_is_used_everywhere_and_keeps_the_state_dict():
    plain, fast = _encoder(), _encoder(dropout_sampler="uniform")
    assert plain.state_dict().keys() == fast.state_dict().keys()
    samplers = {m.sampler for m in fast.modules() if hasattr(m, "sampler")}
    assert samplers == {"uniform"}
    x = _ragged_batch()
    assert torch.allclose(plain(x), fast(x))  # eval mode: no dropout, the same function
