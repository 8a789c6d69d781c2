"""The server a spawner is about to ask for, read from the standard resource traits.

JupyterHub runs ``pre_spawn_hook`` after group overrides and user options (KubeSpawner
profiles) are applied (``User.spawn`` in jupyterhub/user.py), so the traits read here are the
final request: https://jupyterhub.readthedocs.io/en/stable/reference/api/spawner.html

- memory: ``mem_guarantee`` / ``mem_limit`` (bytes, or a ByteSpecification string)
- cpu: ``cpu_guarantee`` / ``cpu_limit`` (cores, float)
- extended resources (GPUs): KubeSpawner's ``extra_resource_guarantees`` /
  ``extra_resource_limits``, keyed by the Kubernetes name the policy maps (``gpu:
  nvidia.com/gpu``)

Which of guarantee and limit counts follows the charge basis (the collector charges the
same way): ``requests`` (default) takes the guarantee and falls back to the limit, as
Kubernetes defaults a missing request to the limit; ``limits`` the limit, falling back to the
guarantee; ``max`` the larger. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger.core.decision import ServerRequest
from ledger.core.quantities import QuantityError, cpu_millicores, device_count, memory_bytes

CHARGE_BASES = ("requests", "limits", "max")


def _pick(guarantee: int | None, limit: int | None, basis: str) -> int:
    if basis == "limits":
        chosen = limit if limit else guarantee
    elif basis == "max":
        chosen = max(guarantee or 0, limit or 0)
    else:
        chosen = guarantee if guarantee else limit
    return int(chosen or 0)


def _amount(value, parse, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return parse(value, where=where)
    except QuantityError:
        raise
    except (TypeError, ValueError) as exc:
        raise QuantityError(f"{where}: {value!r} is not a quantity ({exc})") from None


def request_from_traits(
    *,
    mem_guarantee=None,
    mem_limit=None,
    cpu_guarantee=None,
    cpu_limit=None,
    extra_guarantees: Mapping[str, object] | None = None,
    extra_limits: Mapping[str, object] | None = None,
    extended: Mapping[str, str] | None = None,
    servername: str = "",
    basis: str = "requests",
) -> ServerRequest:
    """A ServerRequest from trait values; ``extended`` maps short name → Kubernetes name."""
    amounts = {
        "cpu": _pick(
            _amount(cpu_guarantee, cpu_millicores, "cpu_guarantee"),
            _amount(cpu_limit, cpu_millicores, "cpu_limit"),
            basis,
        ),
        "memory": _pick(
            _amount(mem_guarantee, memory_bytes, "mem_guarantee"),
            _amount(mem_limit, memory_bytes, "mem_limit"),
            basis,
        ),
    }
    guarantees, limits = extra_guarantees or {}, extra_limits or {}
    for short, k8s_name in (extended or {}).items():
        amounts[short] = _pick(
            _amount(
                guarantees.get(k8s_name), device_count, f"extra_resource_guarantees[{k8s_name}]"
            ),
            _amount(limits.get(k8s_name), device_count, f"extra_resource_limits[{k8s_name}]"),
            basis,
        )
    return ServerRequest(amounts=amounts, servername=servername or "")


def charge_basis_of(policy) -> str:
    basis = getattr(policy, "charge_basis", "requests")
    return basis if basis in CHARGE_BASES else "requests"


def spawner_request(spawner, policy) -> ServerRequest:
    """The request of a JupyterHub spawner (any class with the standard traits)."""
    basis = charge_basis_of(policy)
    return request_from_traits(
        mem_guarantee=getattr(spawner, "mem_guarantee", None),
        mem_limit=getattr(spawner, "mem_limit", None),
        cpu_guarantee=getattr(spawner, "cpu_guarantee", None),
        cpu_limit=getattr(spawner, "cpu_limit", None),
        extra_guarantees=getattr(spawner, "extra_resource_guarantees", None),
        extra_limits=getattr(spawner, "extra_resource_limits", None),
        extended=getattr(policy, "resources", None),
        servername=getattr(spawner, "name", "") or "",
        basis=basis,
    )


def spawner_groups(spawner) -> list[str]:
    """Group names of the spawner's user (``User.groups`` is a list of orm.Group)."""
    user = getattr(spawner, "user", None)
    return sorted({getattr(g, "name", g) for g in (getattr(user, "groups", None) or [])})
