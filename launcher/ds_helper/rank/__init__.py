"""The rank: what every process of every job runs, standard library only, at interpreter speed."""
