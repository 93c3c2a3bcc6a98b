"""`pnn-ssl reproduce`: train every model of the paper and write a report comparing it with the paper."""
