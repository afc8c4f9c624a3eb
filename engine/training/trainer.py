"""``transformers.Trainer`` with this project's three choices plugged into its own hooks.

* ``compute_loss``: the loss over final hidden states a slice at a time (``engine.loss``), so
  a batch's full-vocabulary logits never exist (GPT-2 and Llama-style models; others fall
  back to the Trainer's own loss);
* ``create_optimizer``: ``--optimizer muon`` gives Muon for hidden matrices + AdamW for the
  rest (``engine.training.optim``); ``adamw`` is the Trainer's own; either way the token embeddings
  can have a rate of their own (``--embedding-lr-scale``);
* ``create_scheduler``: with a time budget, a warmup / stable / warmdown schedule on the
  training clock (``engine.training.schedule``) instead of the step count.

Checkpoint writes are timed apart from training.  Import this module lazily (it imports
transformers).
"""

from __future__ import annotations

from transformers import Trainer

from engine.loss import causal_lm_loss, final_hidden_states, supports_hidden_state_loss
from engine.training.schedule import WARMDOWN_FRACTION, TrainClock, budget_lr_factor


class MiniTrainer(Trainer):
    def __init__(
        self,
        *args,
        clock: TrainClock | None = None,
        time_budget_s: float | None = None,
        warmdown: float | None = None,
        optimizer_name: str = "adamw",
        embedding_lr_scale: float = 1.0,
        device: str = "cpu",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.clock = clock or TrainClock()
        self.time_budget_s = time_budget_s
        self.warmdown = WARMDOWN_FRACTION if warmdown is None else warmdown
        self.optimizer_name = optimizer_name
        self.embedding_lr_scale = embedding_lr_scale
        self.train_device = device
        self.hidden_state_loss = supports_hidden_state_loss(self.model)

    # --- loss ---
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.hidden_state_loss or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels")}
        hidden = final_hidden_states(model, inputs["input_ids"], **kwargs)
        head = self.accelerator.unwrap_model(model).get_output_embeddings().weight
        loss = causal_lm_loss(hidden, head, inputs["labels"], num_items_in_batch)
        # as Trainer.compute_loss: a loss over the tokens of all processes is scaled back up
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss

    # --- optimizer and schedule ---
    def create_optimizer(self, model=None):
        if self.optimizer is None and (self.optimizer_name == "muon" or self.embedding_lr_scale != 1.0):
            from engine.training.optim import MuonWithAdamW, ns_dtype_for, param_groups

            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            muon = self.optimizer_name == "muon"
            groups = param_groups(opt_model, decay, self.args.weight_decay, self.args.learning_rate, self.embedding_lr_scale, muon)
            if muon:
                self.optimizer = MuonWithAdamW(
                    groups,
                    lr=self.args.learning_rate,
                    betas=(self.args.adam_beta1, self.args.adam_beta2),
                    eps=self.args.adam_epsilon,
                    weight_decay=self.args.weight_decay,
                    ns_dtype=ns_dtype_for(self.train_device),
                )
            else:  # the Trainer's own AdamW (fused where it can be), with the embeddings' group
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.time_budget_s:
            from torch.optim.lr_scheduler import LambdaLR

            clock, budget, warmdown = self.clock, self.time_budget_s, self.warmdown
            # a plain function: LambdaLR would save (and on resume restore) a callable object's fields
            def factor(_step: int) -> float:
                return budget_lr_factor(clock.marked_s, budget, warmdown_fraction=warmdown)

            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    # --- saving is not training time ---
    def _save_checkpoint(self, model, trial):
        with self.clock.excluded():
            return super()._save_checkpoint(model, trial)
