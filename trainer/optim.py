"""The optimisers: Muon for the blocks' hidden matrices, AdamW for everything else.

Muon (Keller Jordan, 2024) takes SGD momentum and replaces each matrix's update by the nearest
semi-orthogonal matrix (all singular values near 1), found by a few Newton-Schulz iterations.
An update then moves every direction of the matrix by the same amount, instead of mostly the
few directions the gradient happens to favour, and the model learns more per step. It suits
hidden matrices only: the embeddings, the output head, biases and LayerNorm gains stay on AdamW.

The fused qkv weight is three matrices (q, k and v) stacked; each is orthogonalised on its own.
Every orthogonalised matrix here is 128 x 128 or 128 x 512 (fc's weight transposed), so one
batched matmul per shape runs the iterations for all of them at once.
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
    carried (rows x rows), and x0 is multiplied once at the end: for 128 x 512, 44% fewer
    multiply-adds. Run in fp32 only: in bf16 the rounding of G swamps its small eigenvalues and
    the result's singular values stray far above 1.
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
    """

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers
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

    def load_state_dict(self, state: dict) -> None:
        """The optimisers' states (trainer.checkpoint.validate has checked their form).

        A checkpoint from before Muon holds one AdamW's state, whose groups lack `peak_lr`:
        they keep this run's."""
        if "param_groups" in state:
            state = {"adamw": state}
        peaks = [group["peak_lr"] for group in self.param_groups]
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        for group, peak in zip(self.param_groups, peaks, strict=True):
            group.setdefault("peak_lr", peak)


def muon_matrices(model: GPT) -> list[tuple[str, torch.nn.Parameter]]:
    """The blocks' 2-D weights: qkv, the attention projection and the MLP's two matrices."""
    return [(name, p) for name, p in model.blocks.named_parameters() if p.dim() == 2]


def make_optimizer(model: GPT, cfg, ns_dtype: torch.dtype = torch.float32) -> Optimizers:
    """AdamW with weight decay on matrices only (none on biases and norms) for what Muon does
    not take; with cfg.muon_lr > 0, Muon for the blocks' matrices.

    The embeddings and the head's weight get their own AdamW groups where cfg.embed_lr and
    cfg.head_lr are set (0 = cfg.lr, one group with the other matrices). With weight_decay 0 (the
    course recipe) AdamW is exactly Adam. The fused kernel updates all its parameters in one pass.
    """
    muon = {id(p): name for name, p in muon_matrices(model)} if cfg.muon_lr > 0 else {}
    rest = [p for p in model.parameters() if id(p) not in muon]
    own_rates = [(params, lr) for params, lr in (([model.tok_emb.weight, model.pos_emb.weight], cfg.embed_lr),
                                                 ([model.lm_head.weight], cfg.head_lr)) if lr > 0]
    apart = {id(p) for params, _ in own_rates for p in params}
    groups = [{"params": [p for p in rest if p.dim() >= 2 and id(p) not in apart], "weight_decay": cfg.weight_decay},
              *({"params": params, "weight_decay": cfg.weight_decay, "lr": lr} for params, lr in own_rates),
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    if not muon:
        return Optimizers(adamw=adamw)
    matrices = [p for _, p in muon_matrices(model)]
    groups = [{"params": [p for p in matrices if muon[id(p)].endswith("qkv.weight")], "split": 3},
              {"params": [p for p in matrices if not muon[id(p)].endswith("qkv.weight")], "split": 1}]
    return Optimizers(adamw=adamw, muon=Muon(groups, cfg.muon_lr, cfg.muon_momentum, cfg.muon_weight_decay,
                                              ns_dtype))
