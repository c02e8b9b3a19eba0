"""Loss heads, AM-SupCon and CAA weights against hand computations and brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch

from pyspk.losses.caa import EmaPrototypes, caa_weights
from pyspk.losses.margin_softmax import MarginSoftmax
from pyspk.losses.schedule import MarginSchedule
from pyspk.losses.supcon import am_supcon_loss, supcon_loss


def _unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def _ce(logits: list[float], target: int) -> float:
    mx = max(logits)
    return -(logits[target] - mx - math.log(sum(math.exp(v - mx) for v in logits)))


# ---------------------------------------------------------------- margin softmax heads
# Two prototypes at angles 0 and pi/2 (2-d), four embeddings at known angles and norms.
PROTO_ANGLES = [0.0, math.pi / 2]
EMB = [(0.3, 2.0, 0), (1.0, 0.5, 1), (2.0, 1.0, 0), (3.0, 3.0, 0)]  # (angle, norm, label); 3.0 > pi - 0.2


def _head(kind: str, margin=0.2, scale=32.0, easy=False) -> tuple[MarginSoftmax, torch.Tensor, torch.Tensor]:
    head = MarginSoftmax(2, 2, kind=kind, margin=margin, scale=scale, easy_margin=easy)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0 * v for v in _unit(a)] for a in PROTO_ANGLES]))  # norm 3: normalised away
    emb = torch.tensor([[n * v for v in _unit(a)] for a, n, _ in EMB])
    labels = torch.tensor([y for _, _, y in EMB])
    return head, emb, labels


def _hand_margin_logits(kind: str, m: float, s: float, easy: bool) -> list[list[float]]:
    rows = []
    for a, _, y in EMB:
        row = []
        for c, pa in enumerate(PROTO_ANGLES):
            theta = abs(a - pa)  # both in [0, pi]: the angle between the unit vectors
            cos = math.cos(theta)
            if c == y:
                if kind == "am":
                    cos = cos - m
                elif easy:
                    cos = math.cos(theta + m) if cos > 0 else cos
                else:
                    cos = math.cos(theta + m) if theta + m <= math.pi else cos - m * math.sin(m)
            row.append(s * cos)
        rows.append(row)
    return rows


@pytest.mark.parametrize("kind,easy", [("aam", False), ("aam", True), ("am", False)])
def test_margin_heads_match_hand_computation(kind, easy):
    head, emb, labels = _head(kind, easy=easy)
    loss, logits = head(emb, labels)
    want = _hand_margin_logits(kind, 0.2, 32.0, easy)
    assert torch.allclose(logits, torch.tensor(want), atol=1e-4)
    want_loss = sum(_ce(row, y) for row, (_, _, y) in zip(want, EMB)) / len(EMB)
    assert loss.item() == pytest.approx(want_loss, rel=1e-5)


def test_aam_fallback_used_past_pi_minus_m():
    head, emb, labels = _head("aam")
    _, logits = head(emb, labels)
    theta = 3.0  # sample 3 sits 3.0 rad from its prototype; 3.0 + 0.2 > pi
    assert logits[3, 0].item() == pytest.approx(32.0 * (math.cos(theta) - 0.2 * math.sin(0.2)), rel=1e-5)
    assert logits[3, 0].item() < 32.0 * math.cos(theta)  # the fallback still penalises


def test_softmax_head_is_linear_with_bias():
    head, emb, labels = _head("softmax")
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    loss, logits = head(emb, labels)
    w = head.weight.detach()
    want = [
        [sum(e * wc for e, wc in zip(row, w[c].tolist())) + [0.5, -1.0][c] for c in range(2)] for row in emb.tolist()
    ]
    assert torch.allclose(logits, torch.tensor(want), atol=1e-5)
    assert loss.item() == pytest.approx(sum(_ce(r, y) for r, y in zip(want, labels.tolist())) / 4, rel=1e-5)
    assert torch.allclose(head.prototypes.norm(dim=1), torch.ones(2))


def test_margin_zero_aam_is_scaled_cosine_and_margin_settable():
    head, emb, labels = _head("aam", margin=0.0)
    _, logits0 = head(emb, labels)
    assert torch.allclose(logits0, torch.tensor(_hand_margin_logits("aam", 0.0, 32.0, False)), atol=1e-4)
    head.margin = 0.3
    _, logits = head(emb, labels)
    assert torch.allclose(logits, torch.tensor(_hand_margin_logits("aam", 0.3, 32.0, False)), atol=1e-4)


def test_margin_is_checkpointed_and_bad_kind_rejected():
    head = MarginSoftmax(4, 3, margin=0.1)
    head.margin = 0.15
    other = MarginSoftmax(4, 3, margin=0.0)
    other.load_state_dict(head.state_dict())
    assert other.margin == 0.15
    with pytest.raises(ValueError, match="aam"):
        MarginSoftmax(4, 3, kind="arcface")


@pytest.mark.parametrize("kind", ["aam", "am", "softmax"])
def test_margin_softmax_gradcheck(kind):
    torch.manual_seed(0)
    head = MarginSoftmax(5, 4, kind=kind, margin=0.2, scale=8.0).double()
    emb = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    weight = head.weight.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])

    def loss(e, w):
        return torch.func.functional_call(head, {"weight": w}, (e, labels), strict=False)[0]

    assert torch.autograd.gradcheck(loss, (emb, weight))


def test_head_margin_follows_its_schedule():
    """m(e) = start + (margin - start) * min(1, e / warmup_epochs), set by the head itself from
    the training position; no schedule: the full margin from the first step."""
    head = MarginSoftmax(4, 3, margin=0.2, margin_schedule=MarginSchedule(start=0.05, warmup_epochs=4.0))
    values = []
    for e in (0.0, 1.0, 2.0, 4.0, 50.0):
        head.set_progress(e)
        values.append(head.margin)
    assert values == pytest.approx([0.05, 0.0875, 0.125, 0.2, 0.2])
    assert all(b >= a for a, b in zip(values, values[1:]))
    flat = MarginSoftmax(4, 3, margin=0.3)
    flat.set_progress(0.0)
    assert flat.margin == 0.3
    # the margin in force is checkpointed with the head
    head.set_progress(2.0)
    other = MarginSoftmax(4, 3, margin=0.2)
    other.load_state_dict(head.state_dict())
    assert other.margin == pytest.approx(0.125)


# ---------------------------------------------------------------- AM-SupCon
def _naive_am_supcon(emb, labels, margin, tau, weights=None) -> float:
    """The paper's AM-SupCon as written (angular margin, placement ``own``: the module doc of
    pyspk/losses/supcon.py; docs/method.md, 'The formulas'), one pair at a time."""
    z = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in emb]
    n = len(z)
    cos = [[sum(a * b for a, b in zip(z[i], z[j])) for j in range(n)] for i in range(n)]
    w = weights if weights is not None else [[1.0] * n for _ in range(n)]
    anchors = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        total = 0.0
        for p in positives:
            theta = math.acos(max(-1.0, min(1.0, cos[i][p])))
            num = math.exp(math.cos(min(math.pi, max(0.0, theta + margin))) / tau)
            den = num + sum(w[i][a] * math.exp(cos[i][a] / tau) for a in range(n) if a not in (i, p))
            total += -math.log(num / den)
        anchors.append(total / len(positives))
    return sum(anchors) / len(anchors)


def _naive_supcon_khosla(emb, labels, tau) -> float:
    """Khosla et al. 2020, eq. 2 (L_out), averaged over anchors that have positives."""
    z = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in emb]
    n = len(z)
    out = []
    for i in range(n):
        dots = {a: sum(x * y for x, y in zip(z[i], z[a])) / tau for a in range(n) if a != i}
        log_den = math.log(sum(math.exp(v) for v in dots.values()))
        pos = [p for p in dots if labels[p] == labels[i]]
        if pos:
            out.append(-sum(dots[p] - log_den for p in pos) / len(pos))
    return sum(out) / len(out)


SIX = [[1.0, 0.2, -0.3], [0.8, 0.5, 0.1], [-0.2, 1.0, 0.4], [0.1, 0.9, -0.5], [0.3, 0.7, 0.2], [-1.0, -0.2, 0.6]]
SIX_LABELS = [0, 0, 1, 1, 1, 2]  # anchor 5 has no positive and is skipped
SIX_WEIGHTS = [
    [1.0 if SIX_LABELS[i] == SIX_LABELS[k] else 0.1 + 0.1 * ((i + k) % 7) for k in range(6)] for i in range(6)
]


@pytest.mark.parametrize(
    "margin,tau,weighted",
    [(0.2, 0.07, False), (0.2, 0.07, True), (0.1, 0.5, True), (0.0, 0.1, True), (0.5, 0.2, False)],
)
def test_am_supcon_matches_double_loop(margin, tau, weighted):
    w = SIX_WEIGHTS if weighted else None
    got = am_supcon_loss(
        torch.tensor(SIX),
        torch.tensor(SIX_LABELS),
        margin=margin,
        temperature=tau,
        weights=torch.tensor(w) if weighted else None,
    )
    assert got.item() == pytest.approx(_naive_am_supcon(SIX, SIX_LABELS, margin, tau, w), rel=1e-5)


def test_am_supcon_with_zero_margin_is_khosla_supcon():
    torch.manual_seed(1)
    emb = torch.randn(12, 8)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    want = _naive_supcon_khosla(emb.tolist(), labels.tolist(), 0.1)
    assert am_supcon_loss(emb, labels, margin=0.0, temperature=0.1).item() == pytest.approx(want, rel=1e-5)
    assert supcon_loss(emb, labels, temperature=0.1).item() == pytest.approx(want, rel=1e-5)


def test_am_supcon_margin_raises_loss_and_reduction_counts_anchors():
    emb, labels = torch.tensor(SIX), torch.tensor(SIX_LABELS)
    base = am_supcon_loss(emb, labels, margin=0.0)
    assert am_supcon_loss(emb, labels, margin=0.2) > base
    # lowering negative weights lowers the loss (they only appear in the denominator)
    assert am_supcon_loss(emb, labels, margin=0.0, weights=torch.tensor(SIX_WEIGHTS)) < base


def test_am_supcon_pair_alone_is_zero_and_stable():
    # Two views of one speaker and nothing else: the denominator is the positive term alone.
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    loss = am_supcon_loss(emb, torch.tensor([3, 3]), margin=0.2)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_am_supcon_extreme_inputs_are_finite():
    torch.manual_seed(0)
    emb = torch.randn(64, 16) * 1e3
    emb[1] = emb[0]  # identical positive views: cos = 1 exactly
    emb.requires_grad_(True)
    labels = torch.arange(32).repeat(2)
    labels[1] = labels[0]
    loss = am_supcon_loss(emb, labels, margin=0.2, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()


def test_am_supcon_errors():
    with pytest.raises(ValueError, match="no anchor has a positive"):
        am_supcon_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="weights"):
        am_supcon_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), weights=torch.ones(3, 3))


@pytest.mark.parametrize("margin,weighted", [(0.2, False), (0.2, True), (0.0, True)])
def test_am_supcon_gradcheck(margin, weighted):
    torch.manual_seed(2)
    emb = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(SIX_LABELS)
    w = torch.tensor(SIX_WEIGHTS, dtype=torch.float64) if weighted else None
    assert torch.autograd.gradcheck(lambda e: am_supcon_loss(e, labels, margin, 0.3, w), (emb,))


# ---------------------------------------------------------------- CAA weights
def test_caa_weights_by_hand():
    protos = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    emb = torch.tensor([[2.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
    labels = torch.tensor([0, 0, 1, 2])
    s = 5.0
    ws = [[1.0, 0.0], [0.0, 1.0], [-1 / math.sqrt(2), -1 / math.sqrt(2)]]
    zs = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]]
    a = []
    for z, y in zip(zs, labels.tolist()):
        e = [math.exp(s * (z[0] * w[0] + z[1] * w[1])) for w in ws]
        a.append(e[y] / sum(e))
    omega = caa_weights(emb, labels, protos, scale=s)
    for i in range(4):
        for k in range(4):
            want = 1.0 if labels[i] == labels[k] else min(a[i], a[k])
            assert omega[i, k].item() == pytest.approx(want, rel=1e-5)
    assert (omega > 0).all() and (omega <= 1).all()
    floored = caa_weights(emb, labels, protos, scale=s, floor=0.5)
    assert floored.min().item() == pytest.approx(max(0.5, min(a)), rel=1e-6)


def test_caa_weights_carry_no_gradient():
    emb = torch.randn(6, 4, requires_grad=True)
    protos = torch.randn(3, 4, requires_grad=True)
    omega = caa_weights(emb, torch.tensor([0, 0, 1, 1, 2, 2]), protos)
    assert not omega.requires_grad and omega.grad_fn is None
    assert torch.equal(omega, omega.t())
    with pytest.raises(ValueError, match="labels"):
        caa_weights(emb, torch.tensor([0, 0, 1, 1, 2, 3]), protos)


def test_ema_prototypes():
    ema = EmaPrototypes(3, 2, momentum=0.5)
    ema.update(torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]))
    assert torch.allclose(ema.prototypes[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(ema.prototypes[1], torch.tensor([0.0, 1.0]))
    assert torch.equal(ema.prototypes[2], torch.zeros(2)) and ema.seen.tolist() == [True, True, False]
    ema.update(torch.tensor([[0.0, 5.0], [-4.0, 0.0]]), torch.tensor([0, 2]))
    # class 0: normalise(0.5*[1,0] + 0.5*[0,1]); class 2 first seen: its batch mean
    assert torch.allclose(ema.prototypes[0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(ema.prototypes[2], torch.tensor([-1.0, 0.0]))
    assert torch.allclose(ema.prototypes[1], torch.tensor([0.0, 1.0]))
    state = ema.state_dict()
    assert set(state) == {"prototypes", "seen"}
    fresh = EmaPrototypes(3, 2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.prototypes, ema.prototypes)


def test_am_supcon_random_batch_matches_loop_with_arbitrary_weights():
    # weights below 1 on positives too: the formula applies ω_ia to every a in A(i) \ {p}
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(20, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (20,), generator=g)
    w = torch.rand(20, 20, generator=g, dtype=torch.float64) * 0.9 + 0.05
    got = am_supcon_loss(emb, labels, margin=0.3, temperature=0.1, weights=w)
    want = _naive_am_supcon(emb.tolist(), labels.tolist(), 0.3, 0.1, w.tolist())
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_losses_run_in_float32_under_autocast():
    torch.manual_seed(4)
    emb = torch.randn(8, 16).to(torch.bfloat16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    head = MarginSoftmax(16, 4)
    ref_con = am_supcon_loss(emb.float(), labels)
    ref_cls = head(emb.float(), labels)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        con = am_supcon_loss(emb, labels)
        cls, logits = head(emb, labels)
    assert con.dtype == cls.dtype == logits.dtype == torch.float32
    assert con.item() == pytest.approx(ref_con.item(), rel=1e-6)
    assert cls.item() == pytest.approx(ref_cls.item(), rel=1e-6)


def test_am_supcon_zero_weight_rows_stay_finite():
    emb = torch.randn(4, 3, requires_grad=True)
    w = torch.zeros(4, 4)
    loss = am_supcon_loss(emb, torch.tensor([0, 0, 1, 1]), weights=w)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # only the positive term remains
    assert torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------- margin forms and placements
def _naive_margin_loss(emb, labels, margin, tau, form, placement, w=None, mode="exp", t=math.pi / 4):
    """The module doc's formulas, by loops over pairs."""
    z = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in emb]
    n = len(z)
    cos = [[sum(a * b for a, b in zip(z[i], z[j])) for j in range(n)] for i in range(n)]
    w = w or [[1.0] * n for _ in range(n)]

    def marg(c):
        th = math.acos(max(-1 + 1e-6, min(1 - 1e-6, c)))
        if form == "additive":
            return c - margin
        ang = math.cos(min(math.pi, th + margin))
        if form == "angular" or th >= t:
            return ang
        return c - (math.cos(t) - math.cos(t + margin))

    def term(i, a):
        return math.exp(cos[i][a] / tau) * w[i][a] if mode == "exp" else math.exp(w[i][a] * cos[i][a] / tau)

    out = []
    for i in range(n):
        P = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not P:
            continue
        tot = 0.0
        for p in P:
            num = math.exp(marg(cos[i][p]) / tau)
            if placement == "own":
                den = num + sum(term(i, a) for a in range(n) if a not in (i, p))
            else:
                den = sum(math.exp(marg(cos[i][q]) / tau) for q in P) + sum(
                    term(i, a) for a in range(n) if a != i and labels[a] != labels[i]
                )
            tot -= math.log(num / den)
        out.append(tot / len(P))
    return sum(out) / len(out)


@pytest.mark.parametrize("form", ["angular", "additive", "threshold"])
@pytest.mark.parametrize("placement", ["own", "positives"])
@pytest.mark.parametrize("weighted,mode", [(False, "exp"), (True, "exp"), (True, "logit")])
def test_margin_forms_and_placements_match_loops(form, placement, weighted, mode):
    w = SIX_WEIGHTS if weighted else None
    got = am_supcon_loss(
        torch.tensor(SIX, dtype=torch.float64),
        torch.tensor(SIX_LABELS),
        margin=0.15,
        temperature=0.2,
        weights=torch.tensor(w, dtype=torch.float64) if weighted else None,
        margin_type=form,
        placement=placement,
        weight_mode=mode,
        threshold=0.5,
    )
    want = _naive_margin_loss(SIX, SIX_LABELS, 0.15, 0.2, form, placement, w, mode, t=0.5)
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_margin_forms_by_hand_on_one_pair():
    # two positives at 60 degrees, one negative at 180 degrees from the anchor (2-d)
    emb = torch.tensor([_unit(0.0), _unit(math.pi / 3), _unit(math.pi)], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    m, tau, th = 0.1, 0.5, math.pi / 3
    for form, pos in (
        ("angular", math.cos(th + m)),
        ("additive", math.cos(th) - m),
        ("threshold", math.cos(th + m)),
    ):  # threshold pi/4 < 60 degrees: angular branch
        # anchor 0: positive 1, negative 2; anchor 1: positive 0, negative 2 at 120 degrees
        want = (
            -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(-1 / tau)))
            - math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(math.cos(2 * th) / tau)))
        ) / 2
        got = am_supcon_loss(emb, labels, margin=m, temperature=tau, margin_type=form)
        assert got.item() == pytest.approx(want, rel=1e-9), form
    # below the threshold the threshold form is the additive one with the continuity shift
    got = am_supcon_loss(emb, labels, margin=m, temperature=tau, margin_type="threshold", threshold=1.2)
    pos = math.cos(th) - (math.cos(1.2) - math.cos(1.2 + m))
    want = (
        -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(-1 / tau)))
        - math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(math.cos(2 * th) / tau)))
    ) / 2
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_positive_pull_vanishes_at_zero_angle_only_for_additive_and_threshold():
    from pyspk.losses.supcon import margined_cosine

    theta = torch.tensor([0.01], dtype=torch.float64, requires_grad=True)
    for form, vanishes in (("angular", False), ("additive", True), ("threshold", True)):
        (g,) = torch.autograd.grad(margined_cosine(torch.cos(theta), 0.2, form).sum(), theta)
        pull = -g.item()  # d/dθ of the logit, sign flipped: the force towards θ = 0
        if vanishes:
            assert pull == pytest.approx(math.sin(0.01), rel=1e-3), form  # sin θ: -> 0 with θ
        else:
            assert pull == pytest.approx(math.sin(0.21), rel=1e-3), form  # sin(θ + m): -> sin m


def test_zero_margin_positives_placement_is_supcon_and_bad_choices_rejected():
    torch.manual_seed(5)
    emb = torch.randn(10, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    ref = supcon_loss(emb, labels, temperature=0.1)
    got = am_supcon_loss(emb, labels, margin=0.0, temperature=0.1, placement="positives")
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    for kw in ({"margin_type": "arc"}, {"placement": "every"}, {"weight_mode": "mul"}):
        with pytest.raises(ValueError, match="must be one of"):
            am_supcon_loss(emb, labels, **kw)


def test_pair_statistics_force_matches_autograd_on_embeddings():
    """The forces come from the graph the loss's own forward built (no second forward)."""
    from pyspk.losses.supcon import am_supcon_and_cosines, pair_statistics, supcon_from_cosines

    torch.manual_seed(6)
    z = torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    emb = z.float().requires_grad_(True)
    loss, cos = am_supcon_and_cosines(emb, labels, 0.1, 0.5, margin_type="additive", placement="own")
    st = pair_statistics(cos, labels, loss)
    loss.backward()  # the statistics left the graph for the step's backward
    assert emb.grad is not None
    c = z @ z.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(6, dtype=torch.bool)
    assert st["cos_pos"] == pytest.approx(c[same & ~eye].mean().item(), rel=1e-5)
    assert st["cos_neg"] == pytest.approx(c[~same].mean().item(), rel=1e-5)
    # force on one pair by hand: |dL/dθ| = |(g_ij + g_ji)| sin θ, with g from autograd in float64
    cc = c.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(supcon_from_cosines(cc, labels, 0.1, 0.5, margin_type="additive"), cc)
    f = ((g + g.t()) * torch.sqrt(1 - c**2).nan_to_num()).abs()
    assert st["grad_pos"] == pytest.approx(f[same & ~eye].sum().item() / 12, rel=1e-4)
    assert st["grad_neg"] == pytest.approx(f[~same].sum().item() / 12, rel=1e-4)


def test_caa_weight_statistics():
    from pyspk.losses.caa import weight_statistics

    labels = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([[1.0, 1.0, 0.2, 1.0], [1.0, 1.0, 1.0, 1.0], [0.2, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    st = weight_statistics(w, labels)
    neg = [0.2, 1.0, 1.0, 1.0, 0.2, 1.0, 1.0, 1.0]
    assert st["caa_w_mean"] == pytest.approx(sum(neg) / 8)
    # anchor 0's negatives (0.2, 1.0): mean 0.6, 0.2 < 0.3; anchor 2's (0.2, 1.0) likewise
    assert st["caa_w_lt_half"] == pytest.approx(2 / 8)


def test_positive_pair_weights_give_a_weighted_mean_over_positives():
    emb, labels = torch.tensor(SIX, dtype=torch.float64), torch.tensor(SIX_LABELS)
    v = torch.rand(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) + 0.1
    got = am_supcon_loss(emb, labels, margin=0.1, temperature=0.3, margin_type="additive", pos_weights=v)
    # by hand: per-pair losses from single-positive weightings, each anchor's weighted mean
    z = torch.nn.functional.normalize(emb, dim=1)
    c = z @ z.t()
    want = []
    for i in range(6):
        P = [p for p in range(6) if p != i and SIX_LABELS[p] == SIX_LABELS[i]]
        if not P:
            continue
        num = {p: math.exp((c[i, p].item() - 0.1) / 0.3) for p in P}
        ell = {
            p: -math.log(num[p] / (num[p] + sum(math.exp(c[i, a].item() / 0.3) for a in range(6) if a not in (i, p))))
            for p in P
        }
        want.append(sum(v[i, p].item() * ell[p] for p in P) / sum(v[i, p].item() for p in P))
    assert got.item() == pytest.approx(sum(want) / len(want), rel=1e-9)
    ones = am_supcon_loss(
        emb,
        labels,
        margin=0.1,
        temperature=0.3,
        margin_type="additive",
        pos_weights=torch.ones(6, 6, dtype=torch.float64),
    )
    assert ones.item() == pytest.approx(
        am_supcon_loss(emb, labels, margin=0.1, temperature=0.3, margin_type="additive").item(), rel=1e-12
    )
