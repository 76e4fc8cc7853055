"""Learning-rate schedules: call ``step()`` once per epoch (or per iteration) after the optimizer."""
import math


class _Schedule:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self):
        return self.optimizer.lr


class StepLR(_Schedule):
    """lr = base_lr * gamma ** floor(epoch / step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi * epoch / T_max)) / 2, after
    ``warmup`` epochs of linear warm-up from base_lr / warmup."""

    def __init__(self, optimizer, T_max, eta_min=0.0, warmup=0):
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min, self.warmup = T_max, eta_min, warmup
        if warmup:
            optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch):
        if epoch < self.warmup:
            return self.base_lr * (epoch + 1) / self.warmup
        t = min(epoch - self.warmup, self.T_max - self.warmup) / max(1, self.T_max - self.warmup)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t)) / 2
