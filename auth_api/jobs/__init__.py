"""Training jobs as a gateway service: job rows in the database, a runner that sends them to Ray, model ownership."""
