"""What happens: plain async functions with no GraphQL, HTTP or arq in them."""
