"""SGD, Adam and AdamW with PyTorch's update rules, on fastconv Parameters."""
import numpy as np


class Optimizer:
    """Holds the parameters and a learning rate ``lr`` that schedules may change."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.lr = lr
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        for p, state in zip(self.params, self.state):
            self._update(p, state)

    def state_dict(self):
        return {"lr": self.lr, "state": [{k: (v.copy() if isinstance(v, np.ndarray) else v)
                                          for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state):
        self.lr = state["lr"]
        self.state = [dict(s) for s in state["state"]]


class SGD(Optimizer):
    """g = grad + wd*p; b = momentum*b + g (b = g at the first step); g = g + momentum*b if
    nesterov else b; p -= lr*g."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum requires momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov

    def _update(self, p, state):
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad.copy()
        if self.momentum:
            buf = state.get("momentum_buffer")
            buf = g.copy() if buf is None else self.momentum * buf + g
            state["momentum_buffer"] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g


class Adam(Optimizer):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * m_hat / (sqrt(v_hat) + eps).

    ``weight_decay`` is L2 added to the gradient (torch.optim.Adam); see AdamW for decoupled decay.
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, p, state):
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay and self.decoupled:
            p.data *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p.data
        t = state.get("step", 0) + 1
        m = state.get("exp_avg", np.zeros_like(p.data))
        v = state.get("exp_avg_sq", np.zeros_like(p.data))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state.update(step=t, exp_avg=m, exp_avg_sq=v)
        step_size = self.lr / (1 - b1 ** t)
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + self.eps
        p.data -= step_size * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr*wd before the Adam step (default wd 0.01)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
