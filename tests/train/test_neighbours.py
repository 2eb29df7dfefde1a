import torch

from kwsdeploy.train.neighbours import NEIGHBOUR_SHIFT_S, add_neighbours, neighbour_generator

RATE = 1000


def impulses(positions: list[int], t: int = RATE) -> torch.Tensor:
    wave = torch.zeros(len(positions), t)
    for i, p in enumerate(positions):
        wave[i, p] = float(i + 1)  # the clip's own mark: its row number + 1
    return wave


def test_off_or_lone_clip_is_unchanged():
    wave = impulses([500, 400])
    assert add_neighbours(wave, 0.0, neighbour_generator(0, 0), RATE) is wave
    one = impulses([500])
    assert add_neighbours(one, 1.0, neighbour_generator(0, 0), RATE) is one


def test_every_clip_gets_its_predecessor_shifted_out_of_the_window_by_the_drawn_amount():
    positions = [500, 450, 550, 500, 480, 520, 500, 500]
    wave = impulses(positions)
    out = add_neighbours(wave, 1.0, neighbour_generator(3, 1), RATE)
    lo, hi = (int(s * RATE) for s in NEIGHBOUR_SHIFT_S)
    sides = set()
    for i, own in enumerate(positions):
        assert out[i, own] == i + 1  # the clip itself is untouched
        prev = (i - 1) % len(positions)
        found = torch.nonzero(out[i] == prev + 1).flatten().tolist()
        if not found:  # shifted past the window's edge: the predecessor's mark fell off
            continue
        (at,) = found
        moved = at - positions[prev]
        assert lo <= abs(moved) <= hi
        sides.add(moved < 0)
        assert float(out[i].abs().sum()) == (i + 1) + (prev + 1)
    assert sides == {True, False}  # both the previous word's end and the next word's start occur


def test_the_share_of_clips_follows_p_and_draws_repeat_for_a_seed():
    wave = torch.randn(400, 200)
    a = add_neighbours(wave, 0.3, neighbour_generator(5, 2), 100)
    b = add_neighbours(wave, 0.3, neighbour_generator(5, 2), 100)
    c = add_neighbours(wave, 0.3, neighbour_generator(5, 3), 100)
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != wave).any(dim=1).float().mean().item()
    assert 0.22 < changed < 0.38
