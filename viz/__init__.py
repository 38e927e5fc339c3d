"""Plots of stored runs (``rtnclock plot``): clock raster, level traces, cross-frequency
coupling, gates, cost and effective rank; each a ``plot_*(run) -> Figure``; and a training
run directory's gate-open rate per step (``plot_training``)."""

from .plots import (KINDS, PLOTS, coupling_table, decimate, level_signals, plot_coupling, plot_cost,
                    plot_gates, plot_rank, plot_raster, plot_traces)
from .training import plot_training

__all__ = ["KINDS", "PLOTS", "coupling_table", "decimate", "level_signals", "plot_coupling", "plot_cost",
           "plot_gates", "plot_rank", "plot_raster", "plot_traces", "plot_training"]
