"""What both apps share: errors and their JSON form, JSON in/out, tokens, the OpenAPI builder."""
