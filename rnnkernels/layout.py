"""Where each step of each sequence lives, in the module's layout and on the
[T, B, F] step grid the op contract runs on.

Modules keep a layer's input and output in the caller's layout (a dense
[T, B, F] tensor, or a PackedSequence's data [N, F]) so that projections and
inter-layer dropout see the same tensors as torch.nn. Before the recurrence a
layout places rows on the step grid, reversed within each sequence's own
length for the reverse direction, and afterwards takes them back.
"""

import torch


class DenseLayout:
    """A [T, B, F] batch in which every row runs all T steps."""

    lengths = None

    def to_steps(self, x, reverse):
        return x.flip(0) if reverse else x

    def from_steps(self, y, reverse):
        return y.flip(0) if reverse else y


class PackedLayout:
    """The rows of PackedSequence data, placed on a zero-padded [T, B, F] grid."""

    def __init__(self, batch_sizes, device):
        batch_sizes = batch_sizes.to("cpu", torch.int64)
        self.steps, self.batch = len(batch_sizes), int(batch_sizes[0])
        valid = torch.arange(self.batch)[None, :] < batch_sizes[:, None]  # [T, B]
        lengths = valid.sum(0)  # [B], non-increasing: packed rows are sorted
        step, row = valid.nonzero(as_tuple=True)  # packed order: by step, then row
        forward = step * self.batch + row
        backward = (lengths[row] - 1 - step) * self.batch + row
        self._grid_index = {False: forward.to(device), True: backward.to(device)}
        self.lengths = lengths.to(device)

    def to_steps(self, data, reverse):
        grid = data.new_zeros(self.steps * self.batch, data.shape[-1])
        grid = grid.index_copy(0, self._grid_index[reverse], data)
        return grid.view(self.steps, self.batch, -1)

    def from_steps(self, y, reverse):
        return y.reshape(self.steps * self.batch, -1).index_select(0, self._grid_index[reverse])
