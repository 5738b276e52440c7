"""Certificate policy processing of RFC 5280 §6.1, for ``chain.py``.

A path's certificates may assert policies (certificatePolicies), map an
issuer's policies onto the subject's (policyMappings) and constrain what
follows them (policyConstraints: requireExplicitPolicy, inhibitPolicyMapping;
inhibitAnyPolicy). ``check_policies`` runs the algorithm of §6.1.2-§6.1.5
over a path: the valid_policy_tree and the three counters
explicit_policy, policy_mapping and inhibit_anyPolicy.

The user inputs of §6.1.1 are fixed to the values mailcrypt (and the PKITS
default settings) use: user-initial-policy-set = {anyPolicy},
initial-explicit-policy, initial-policy-mapping-inhibit and
initial-any-policy-inhibit all false. So a path without policies is
valid unless one of its certificates requires an explicit policy; the
final intersection with the initial set (§6.1.5 (g)) changes nothing.
Policy qualifiers are not kept: mailcrypt shows no policy text to anyone.

It reads certificates only (through asn1crypto, which decodes
policyMappings, which cryptography does not) and raises ``PolicyError``
when the path fails; it does not build paths or check signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["ANY_POLICY", "PolicyError", "check_policies"]

ANY_POLICY = "2.5.29.32.0"
_DER = Encoding.DER


class PolicyError(Exception):
    """The path fails policy processing (RFC 5280 §6.1.3 (f), §6.1.4 (a), §6.1.5 (g))."""


class _Node:
    """A node of the valid_policy_tree (§6.1.2 (a)); qualifiers are not kept."""

    __slots__ = ("policy", "expected", "parent", "children")

    def __init__(self, policy: str, expected: set[str], parent: _Node | None) -> None:
        self.policy = policy
        self.expected = expected
        self.parent = parent
        self.children: list[_Node] = []
        if parent is not None:
            parent.children.append(self)


@dataclass(frozen=True)
class _Extensions:
    """The policy extensions of one certificate, decoded; None where absent."""

    policies: tuple[str, ...] | None
    mappings: tuple[tuple[str, str], ...] | None
    require_explicit: int | None
    inhibit_mapping: int | None
    inhibit_any: int | None


def _decode(cert: x509.Certificate) -> _Extensions:
    try:
        parsed = asn1_x509.Certificate.load(cert.public_bytes(_DER))
        policies = parsed.certificate_policies_value
        mappings = parsed.policy_mappings_value
        constraints = parsed.policy_constraints_value
        inhibit = parsed.inhibit_any_policy_value
        oids = None if policies is None else tuple(info["policy_identifier"].dotted for info in policies)
        pairs = (
            None
            if mappings is None
            else tuple((m["issuer_domain_policy"].dotted, m["subject_domain_policy"].dotted) for m in mappings)
        )
        require = explicit = None
        if constraints is not None:
            require = constraints["require_explicit_policy"].native
            explicit = constraints["inhibit_policy_mapping"].native
        skip = None if inhibit is None else inhibit.native
    except (ValueError, TypeError, KeyError) as exc:
        raise PolicyError(f"{_subject(cert)} has a malformed policy extension ({exc})") from None
    return _Extensions(oids, pairs, require, explicit, skip)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _prune(levels: list[list[_Node]], deepest: int) -> list[list[_Node]] | None:
    """Delete childless nodes at depth ``deepest`` and above, repeatedly; None for the NULL tree."""
    for depth in range(deepest, -1, -1):
        for node in levels[depth]:
            if not node.children and node.parent is not None:
                node.parent.children.remove(node)
        levels[depth] = [node for node in levels[depth] if node.children]
    return levels if levels[0] else None


def _add_policies(levels: list[list[_Node]], policies: tuple[str, ...], any_allowed: bool) -> None:
    """§6.1.3 (d) (1)-(2): the nodes of depth i for one certificate's policies."""
    above = levels[-1]
    level: list[_Node] = []
    for policy in dict.fromkeys(policies):
        if policy == ANY_POLICY:
            continue
        parents = [node for node in above if policy in node.expected]
        if not parents:
            parents = [node for node in above if node.policy == ANY_POLICY]
        level.extend(_Node(policy, {policy}, parent) for parent in parents)
    if ANY_POLICY in policies and any_allowed:
        for node in above:
            present = {child.policy for child in node.children}
            for value in sorted(node.expected - present):
                level.append(_Node(value, {value}, node))
    levels.append(level)


def _map_policies(
    levels: list[list[_Node]], mappings: tuple[tuple[str, str], ...], mapping_allowed: bool
) -> list[list[_Node]] | None:
    """§6.1.4 (b): apply one certificate's policyMappings to the nodes of its depth."""
    targets: dict[str, set[str]] = {}
    for issuer_policy, subject_policy in mappings:
        targets.setdefault(issuer_policy, set()).add(subject_policy)
    depth = len(levels) - 1
    tree: list[list[_Node]] | None = levels
    for issuer_policy, subjects in targets.items():
        if tree is None:
            break
        matching = [node for node in tree[depth] if node.policy == issuer_policy]
        if mapping_allowed:
            for node in matching:
                node.expected = set(subjects)
            if not matching:
                # (b)(1): an anyPolicy node stands for the mapped policy too.
                for any_node in [node for node in tree[depth] if node.policy == ANY_POLICY][:1]:
                    tree[depth].append(_Node(issuer_policy, set(subjects), any_node.parent))
        elif matching:
            # (b)(2): mapping inhibited, so the mapped policy dies here.
            for node in matching:
                if node.parent is not None:
                    node.parent.children.remove(node)
            tree[depth] = [node for node in tree[depth] if node not in matching]
            tree = _prune(tree, depth - 1) if tree[depth] else None
    return tree


def check_policies(certs: Sequence[x509.Certificate], self_issued: Sequence[bool]) -> tuple[str, ...]:
    """Run §6.1 policy processing over ``certs``, from the one the anchor issued to the end entity.

    ``self_issued[k]`` says whether ``certs[k]`` is self-issued (§6.1.4 (h)
    and §6.1.3 (d)(2) treat those apart). Returns the policies the path is
    valid for (the leaves of the final valid_policy_tree, empty when it is
    NULL and no explicit policy was required); raises ``PolicyError``.
    """
    n = len(certs)
    explicit_policy = inhibit_any = policy_mapping = n + 1
    levels: list[list[_Node]] | None = [[_Node(ANY_POLICY, {ANY_POLICY}, None)]]
    decoded = _Extensions(None, None, None, None, None)
    for i, cert in enumerate(certs, start=1):
        decoded = _decode(cert)
        last = i == n
        # §6.1.3 (d)-(e).
        if decoded.policies is None:
            levels = None
        elif levels is not None:
            _add_policies(levels, decoded.policies, inhibit_any > 0 or (not last and self_issued[i - 1]))
            levels = _prune(levels, i - 1) if levels[i] else None
        # §6.1.3 (f).
        if explicit_policy <= 0 and levels is None:
            raise PolicyError(f"no acceptable certificate policy at {_subject(cert)} (an explicit policy is required)")
        if last:
            break
        # §6.1.4 (a)-(b).
        if decoded.mappings is not None:
            if any(ANY_POLICY in pair for pair in decoded.mappings):
                raise PolicyError(f"{_subject(cert)} maps anyPolicy (RFC 5280 §6.1.4 (a))")
            if levels is not None:
                levels = _map_policies(levels, decoded.mappings, policy_mapping > 0)
        # §6.1.4 (h)-(j).
        if not self_issued[i - 1]:
            explicit_policy = max(explicit_policy - 1, 0)
            policy_mapping = max(policy_mapping - 1, 0)
            inhibit_any = max(inhibit_any - 1, 0)
        if decoded.require_explicit is not None:
            explicit_policy = min(explicit_policy, decoded.require_explicit)
        if decoded.inhibit_mapping is not None:
            policy_mapping = min(policy_mapping, decoded.inhibit_mapping)
        if decoded.inhibit_any is not None:
            inhibit_any = min(inhibit_any, decoded.inhibit_any)
    # §6.1.5 (a)-(b), and (g) with user-initial-policy-set = {anyPolicy}.
    explicit_policy = max(explicit_policy - 1, 0)
    if n and decoded.require_explicit == 0:
        explicit_policy = 0
    if levels is None:
        if explicit_policy <= 0:
            raise PolicyError("the path is valid for no certificate policy, and an explicit policy is required")
        return ()
    return tuple(sorted({node.policy for node in levels[-1]}))
