"""What workloads and resource servers import: a self-renewing token authorizer and a token validator."""
