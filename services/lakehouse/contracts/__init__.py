"""Data contracts: each source table declared once in the project, checked on every load."""

from __future__ import annotations

from ._contracts import (
    Contract,
    contract_for,
    dbt_sources_yaml,
    evolve_to_contract,
    load_contracts,
    parse_contracts,
    platform_contracts,
)

__all__ = [
    "Contract",
    "contract_for",
    "dbt_sources_yaml",
    "evolve_to_contract",
    "load_contracts",
    "parse_contracts",
    "platform_contracts",
]
