"""Retrieval for RAG candidates: a corpus folder, token chunks, BM25 / dense / hybrid indexes
cached on disk by corpus content hash. Importing this package imports no index library."""
