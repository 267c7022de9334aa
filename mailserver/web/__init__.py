"""Web side: the operations listener now; patient webmail and admin API later."""
