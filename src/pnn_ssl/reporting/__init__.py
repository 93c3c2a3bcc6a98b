"""Figures, tables and reports drawn from the files of run folders."""
