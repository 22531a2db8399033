"""The token-cached RAG core: retrieve -> tokens -> assemble (token space) -> generate."""

from genesis.rag._assembly import (
    AssembledPrompt,
    IncludedChunk,
    PromptAssembler,
    PromptSegment,
    PromptTemplate,
)
from genesis.rag._pipeline import RAGAnswer, RAGUsage, Source, TokenCachedRAG

__all__ = [
    "AssembledPrompt",
    "IncludedChunk",
    "PromptAssembler",
    "PromptSegment",
    "PromptTemplate",
    "RAGAnswer",
    "RAGUsage",
    "Source",
    "TokenCachedRAG",
]
