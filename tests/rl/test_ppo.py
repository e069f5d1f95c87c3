"""GAE over truncated / terminated branches and the clipped token-level surrogate, against hand values."""

from __future__ import annotations

import torch

from mbpo_ray.rl.ppo import gae, normalise, ppo_loss


def test_gae_truncated_and_terminated_branches():
    rewards = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    values = torch.tensor([[1.0, 1.0], [0.5, 9.0], [1.0, 1.0]])
    terminal = torch.tensor([[False, False], [True, False], [False, True]])
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    last = torch.tensor([4.0, 9.0, 100.0])
    adv, ret = gae(rewards, values, terminal, valid, last, gamma=0.5, lam=0.5)
    # truncated: bootstrapped with V(last) = 4; terminated: nothing after the success counts
    torch.testing.assert_close(adv, torch.tensor([[-0.25, 1.0], [0.5, 0.0], [-0.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.75, 2.0], [1.0, 0.0], [0.5, 1.0]]))


def test_ppo_loss_on_policy_and_clipped():
    old = torch.log(torch.full((4, 3), 0.5))
    adv = torch.tensor([1.0, -1.0, 2.0, 0.5])
    values, returns = torch.zeros(4), torch.ones(4)
    ent = torch.full((4, 3), 0.7)
    same = ppo_loss(old.clone(), old, adv, values, returns, ent, clip=0.1, value_coef=0.5, entropy_coef=0.01)
    assert float(same.approx_kl) == 0.0 and float(same.clip_fraction) == 0.0
    torch.testing.assert_close(same.policy_loss, -adv.mean())
    torch.testing.assert_close(same.value_loss, torch.tensor(0.5))
    torch.testing.assert_close(same.loss, -adv.mean() + 0.25 - 0.007)
    # doubled probabilities: positive advantages are capped at 1 + clip, negative ones count in full
    far = ppo_loss(old + torch.log(torch.tensor(2.0)), old, adv, values, returns, ent, 0.1, 0.5, 0.0)
    expected = -torch.where(adv > 0, 1.1 * adv, 2.0 * adv).mean()
    torch.testing.assert_close(far.policy_loss, expected)
    assert float(far.clip_fraction) == 1.0 and float(far.approx_kl) > 0


def test_gradient_flows_only_through_unclipped_tokens():
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.0, 0.5]], requires_grad=True)  # token 2 is outside the clip range
    ppo_loss(new, old, torch.tensor([1.0]), torch.zeros(1), torch.zeros(1), torch.zeros(1, 2), 0.1, 0.0, 0.0).loss.backward()
    assert new.grad[0, 0] != 0 and new.grad[0, 1] == 0


def test_normalise():
    x = normalise(torch.tensor([1.0, 2.0, 3.0]))
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std(unbiased=False)) - 1) < 1e-4
