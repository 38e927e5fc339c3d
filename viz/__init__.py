"""Plots of stored runs (``rtnclock plot``): clock raster, level traces, cross-frequency
coupling, gates, cost and effective rank; each a ``plot_*(run) -> Figure``."""

from .plots import (KINDS, PLOTS, coupling_table, decimate, level_signals, plot_coupling, plot_cost,
                    plot_gates, plot_rank, plot_raster, plot_traces)

__all__ = ["KINDS", "PLOTS", "coupling_table", "decimate", "level_signals", "plot_coupling", "plot_cost",
           "plot_gates", "plot_rank", "plot_raster", "plot_traces"]
