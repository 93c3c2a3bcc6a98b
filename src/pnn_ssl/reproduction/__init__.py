"""`pnn-ssl reproduce`: train every model of Laydevant et al. (2023) and write a report that compares the results with theirs."""
