"""The optimisers: Muon for the blocks' hidden matrices, AdamW for everything else.

Muon (Keller Jordan, 2024) takes SGD momentum and replaces each matrix's update by the nearest
semi-orthogonal matrix (all singular values near 1), found by a few Newton-Schulz iterations.
An update then moves every direction of the matrix by the same amount, instead of mostly the
few directions the gradient happens to favour, and the model learns more per step. It suits
hidden matrices only: the embeddings, the output head, biases and LayerNorm gains stay on AdamW.

The fused qkv weight is three matrices (q, k and v) stacked; each is orthogonalised on its own.
Every orthogonalised matrix then has one of two shapes, n_embd x n_embd or n_embd x the MLP's
width (fc's weight transposed), so one batched matmul per shape runs the iterations for all of
them at once.
"""

import torch
import torch.distributed as dist

from model import GPT

# Keller Jordan's quintic: brings every singular value into roughly [0.5, 1.5] in 5 steps.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(g: torch.Tensor, dtype: torch.dtype, keep_dtype: bool = False) -> torch.Tensor:
    """Newton-Schulz iterations on a batch of matrices (n, rows, cols) with rows <= cols.

    Divides by the Frobenius norm first, which bounds the spectral norm by 1 so the iteration
    converges; runs in `dtype` (bf16 where the CPU multiplies it natively, else fp32).
    """
    x = g.to(dtype)
    x = x / (x.norm(dim=(1, 2), keepdim=True) + 1e-7)
    wide = x.size(2) >= 2 * x.size(1)
    x = newton_schulz_gram(x) if wide and dtype == torch.float32 else newton_schulz(x)
    return x if keep_dtype else x.to(g.dtype)


def newton_schulz(x: torch.Tensor) -> torch.Tensor:
    """x <- a x + (b G + c G^2) x with G = x x^T, NS_STEPS times; baddbmm fuses the scaling and sums."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(NS_STEPS):
        gram = torch.bmm(x, x.mT)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


def newton_schulz_gram(x: torch.Tensor) -> torch.Tensor:
    """The same iterations, done on the rows x rows Gram matrix: cheaper for a wide matrix.

    Each step multiplies x on the left by P = a + b G + c G^2, a polynomial in G = x x^T, so after
    all steps x = Q x0 with Q the product of the P's, and the next G is P G P. Only Q and G are
    carried (rows x rows), and x0 is multiplied once at the end: fewer multiply-adds when cols
    is several times rows (docs/training.md counts them). Run in fp32 only: in bf16 the rounding
    of G swamps its small eigenvalues and the result's singular values stray far above 1.
    """
    a, b, c = NS_COEFFICIENTS
    gram, q = torch.bmm(x, x.mT), None
    for step in range(NS_STEPS):
        p = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        p.diagonal(dim1=1, dim2=2).add_(a)
        q = p if q is None else torch.bmm(p, q)
        if step < NS_STEPS - 1:
            gram = torch.bmm(torch.bmm(p, gram), p)
    return torch.bmm(q, x)


def orthogonalize_shared(stacks: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """orthogonalize on each stack of matrices (one per shape), shared out across the ranks.

    Every rank holds the same all-reduced gradients, so each orthogonalises 1/world_size of every
    stack and one all-gather hands every rank all of them: the work of one rank, shared out. One
    all-gather for all the shapes, not one per shape: with two ranks to a core (NPROC=4 on 2
    cores) each collective costs a round of waiting for the other ranks to be scheduled.
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world == 1:
        return [orthogonalize(g, dtype) for g in stacks]
    rank, shares = dist.get_rank(), [-(-g.size(0) // world) for g in stacks]  # ceil: the last shares are padded
    mine = [orthogonalize(padded(g[rank * share:][:share], share), dtype, keep_dtype=True)
            for g, share in zip(stacks, shares)]
    flat = torch.cat([m.reshape(-1) for m in mine])
    # gloo has no bf16 collectives; an all-gather only copies bits, so bf16 travels as float16 bits.
    wire = flat.view(torch.float16) if flat.dtype == torch.bfloat16 else flat
    gathered = torch.empty(world, wire.numel(), dtype=wire.dtype)
    dist.all_gather(list(gathered.unbind(0)), wire)
    gathered = gathered.view(flat.dtype).split([m.numel() for m in mine], dim=1)  # (world, share x matrix) each
    return [part.reshape(-1, *g.shape[1:])[:g.size(0)].to(g.dtype) for part, g in zip(gathered, stacks)]


def padded(g: torch.Tensor, n: int) -> torch.Tensor:
    """The stack g (this rank's share, short or empty at the end) with zero matrices appended up to n."""
    return g if g.size(0) == n else torch.cat([g, g.new_zeros(n - g.size(0), *g.shape[1:])])


def pieces(p: torch.Tensor, split: int) -> list[torch.Tensor]:
    """The matrices of a weight Muon orthogonalises, as views with rows <= cols."""
    return [m if m.size(0) <= m.size(1) else m.mT for m in p.chunk(split, dim=0)]


class Muon(torch.optim.Optimizer):
    """Nesterov momentum whose update is orthogonalised, per matrix.

    Every matrix moves by lr times its orthogonalised update, tall ones included (Keller Jordan's
    version moves a matrix of r rows and c < r columns sqrt(r / c) times further: fc by 2x here,
    which trained no better in this model, docs/training.md).

    A param group's `split` says into how many matrices (stacked on dim 0) a weight falls:
    3 for the fused qkv. Decoupled weight decay: p <- p * (1 - lr * weight_decay).
    """

    def __init__(self, groups: list[dict], lr: float, momentum: float, weight_decay: float,
                 ns_dtype: torch.dtype = torch.float32):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, split=1))
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        updates, targets = {}, []  # matrices of one shape orthogonalised together
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad)
                nesterov = p.grad.add(buf, alpha=group["momentum"])
                for m in pieces(nesterov, group["split"]):
                    updates.setdefault(m.shape, []).append(m)
                targets.append((p, group))
        stacks = orthogonalize_shared([torch.stack(ms) for ms in updates.values()], self.ns_dtype)
        done = {shape: iter(stack.unbind(0)) for shape, stack in zip(updates, stacks)}
        for p, group in targets:
            lr = group["lr"]
            p.mul_(1 - lr * group["weight_decay"])
            for view in pieces(p, group["split"]):
                view.add_(next(done[view.shape]), alpha=-lr)


class Optimizers:
    """Several optimisers stepped as one: the trainer's loop and its checkpoint see one object.

    Each param group keeps its own peak learning rate (`peak_lr`); `set_lr_scale` applies the
    schedule's factor to all of them, so Muon and AdamW follow one schedule at their own rates.
    `names` holds each optimiser's parameter names in the order of its state_dict's indices.
    """

    def __init__(self, names: dict[str, list[str]], **optimizers: torch.optim.Optimizer):
        self.optimizers, self.names = optimizers, names
        for group in self.param_groups:
            group["peak_lr"] = group["lr"]

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def set_lr_scale(self, scale: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["peak_lr"] * scale

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict, saved_names: dict[str, list[str]]) -> None:
        """The moments of a checkpoint's optimisers, whose parameters were `saved_names` (state_names of
        its train_config; trainer.checkpoint.validate has checked the state against them).

        Moments move by parameter name: a parameter this run gives to the optimiser that held it
        keeps its moments, one that changes optimiser (another recipe, --muon-lr 0) starts afresh.
        Every group keeps this run's settings (rates, betas, decay, momentum): on --resume a flag
        or recipe given on the command line is what trains."""
        for name, opt in self.optimizers.items():
            saved = state.get(name, {"state": {}})
            index = {param: i for i, param in enumerate(saved_names.get(name, []))}
            moments = {i: saved["state"][index[param]] for i, param in enumerate(self.names[name])
                       if index.get(param) in saved["state"]}
            groups, start = [], 0
            for group in opt.param_groups:  # this run's groups, their parameters as state_dict indices
                groups.append({**group, "params": list(range(start, start + len(group["params"])))})
                start += len(group["params"])
            opt.load_state_dict({"state": moments, "param_groups": groups})


# The rates that decide which optimiser and group a parameter falls in.
LAYOUT_RATES = ("muon_lr", "embed_lr", "head_lr")


def layout(shapes: dict[str, tuple], muon_lr: float, embed_lr: float, head_lr: float) -> dict[str, list]:
    """Each optimiser's param groups as (kind, parameter names), in make_optimizer's order, from the
    parameters' names and shapes alone: a checkpoint's layout follows from its train_config.

    AdamW: the matrices Muon does not take (weight decay), the embeddings and the head's weight
    where they have their own rate, then the vectors (no decay). Muon (muon_lr > 0): the blocks'
    2-D weights, the fused qkv apart (orthogonalised as its three matrices)."""
    muon = [n for n, shape in shapes.items() if n.startswith("blocks.") and len(shape) == 2] if muon_lr > 0 else []
    rest = [n for n in shapes if n not in muon]
    own = [(kind, names) for kind, names, lr in (("embeddings", ["tok_emb.weight", "pos_emb.weight"], embed_lr),
                                                 ("head", ["lm_head.weight"], head_lr)) if lr > 0]
    apart = {n for _, names in own for n in names}
    adamw = [("matrices", [n for n in rest if len(shapes[n]) >= 2 and n not in apart]), *own,
             ("vectors", [n for n in rest if len(shapes[n]) < 2])]
    groups = {"adamw": [(kind, names) for kind, names in adamw if names]}
    if muon:
        groups["muon"] = [("qkv", [n for n in muon if n.endswith("qkv.weight")]),
                          ("other_matrices", [n for n in muon if not n.endswith("qkv.weight")])]
    return groups


def state_names(shapes: dict[str, tuple], rates: dict) -> dict[str, list[str]]:
    """Each optimiser's parameter names in its state_dict's order, for the LAYOUT_RATES in `rates`."""
    groups = layout(shapes, *(rates[name] for name in LAYOUT_RATES))
    return {opt: [n for _, names in kinds for n in names] for opt, kinds in groups.items()}


def muon_matrices(model: GPT) -> list[tuple[str, torch.nn.Parameter]]:
    """The blocks' 2-D weights: qkv, the attention projection and the MLP's two matrices."""
    return [(name, p) for name, p in model.blocks.named_parameters() if p.dim() == 2]


def make_optimizer(model: GPT, cfg, ns_dtype: torch.dtype = torch.float32) -> Optimizers:
    """AdamW with weight decay on matrices only (none on biases and norms) for what Muon does
    not take; with cfg.muon_lr > 0, Muon for the blocks' matrices (`layout`).

    The embeddings and the head's weight get their own AdamW groups where cfg.embed_lr and
    cfg.head_lr are set (0 = cfg.lr, one group with the other matrices). With weight_decay 0 (the
    course recipe) AdamW is exactly Adam. The fused kernel updates all its parameters in one pass.
    """
    params = dict(model.named_parameters())
    groups = layout({n: tuple(p.shape) for n, p in params.items()}, cfg.muon_lr, cfg.embed_lr, cfg.head_lr)
    settings = {"matrices": {"weight_decay": cfg.weight_decay}, "vectors": {"weight_decay": 0.0},
                "embeddings": {"weight_decay": cfg.weight_decay, "lr": cfg.embed_lr},
                "head": {"weight_decay": cfg.weight_decay, "lr": cfg.head_lr},
                "qkv": {"split": 3}, "other_matrices": {"split": 1}}

    def param_groups(opt: str) -> list[dict]:
        return [{**settings[kind], "params": [params[n] for n in names]} for kind, names in groups[opt]]

    names = {opt: [n for _, names in kinds for n in names] for opt, kinds in groups.items()}
    adamw = torch.optim.AdamW(param_groups("adamw"), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    if "muon" not in groups:
        return Optimizers(names, adamw=adamw)
    return Optimizers(names, adamw=adamw, muon=Muon(param_groups("muon"), cfg.muon_lr, cfg.muon_momentum,
                                                    cfg.muon_weight_decay, ns_dtype))
