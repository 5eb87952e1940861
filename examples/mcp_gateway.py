"""An MCP gateway: an agent's MCP client talks to Stopline's gateway, which forwards the
calls the policy lets through to a file server running over stdio. No network, no model:
the "agent" is a script of tool calls made with the mcp package's own client. Policy:
the `mcp-files` workflow of examples/integrations/agent_tools.policy.

The story:
 1. tools/list through the gateway: every upstream tool, marked with the reversibility
    class the gate uses (from its MCP annotations unless the policy declares one);
 2. write_file (annotated destructive, the policy declares it fully reversible: allow) and
    read_file (readOnlyHint: full: allow) run; their executions are recorded;
 3. delete_file (destructiveHint, no class in the policy: irreversible) is held for an
    operator: the result is an error carrying the decision id and digest; an approval by
    a support manager does not count, an operator's does (out of band), and the same call
    retried runs once; retried again it is a new call that needs a new approval;
 4. chmod_file is not in the policy: denied;
 5. delete_file on /etc/passwd fires a stop: every later call is refused until an
    allowed resume.

Run:  pip install -e '.[mcp]' && python examples/mcp_gateway.py
      (the extra: the mcp package, docs/integrations.md)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

POLICY = Path(__file__).resolve().parent / "integrations"
DIRECTORY = {"ops": ["operator"], "sam": ["support_manager"]}  # your identity provider


def file_server():
    """The upstream MCP server (run as a subprocess over stdio): an in-memory file store."""
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    srv = MCPServer("files")
    files: dict[str, str] = {"/etc/passwd": "root:x:0:0"}

    @srv.tool(annotations=ToolAnnotations(read_only_hint=True))
    def read_file(path: str) -> str:
        """Read a file."""
        return files.get(path, "")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str) -> dict:
        """Write a file."""
        files[path] = text
        return {"path": path, "bytes": len(text)}

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_file(path: str) -> dict:
        """Delete a file."""
        return {"path": path, "deleted": files.pop(path, None) is not None}

    @srv.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    def chmod_file(path: str, mode: str) -> str:
        """Change a file's mode."""
        return "ok"

    return srv


async def agent(rt) -> None:
    from mcp import Client, StdioServerParameters

    from policy_engine.integrations.mcp import GATE_META, Approval, StoplineGateway

    upstream = StdioServerParameters(command=sys.executable, args=[str(Path(__file__).resolve()), "--file-server"])
    gateway = StoplineGateway(upstream, rt, workflow="mcp-files", approvers=DIRECTORY)

    async with Client(gateway.server) as client:
        async def call(tool: str, **args) -> dict:
            r = await client.call_tool(tool, args)
            g = (r.meta or {}).get(GATE_META, {})
            text = (r.content[0].text.splitlines() or [""])[0] if r.content else ""
            print(f"  {tool}({', '.join(f'{k}={v!r}' for k, v in args.items())}) -> {g.get('outcome')}"
                  f" [{g.get('effect')} by {g.get('rule')}, reversibility {g.get('reversibility')}]"
                  f"{'' if g.get('outcome') == 'ran' else ': ' + text[:110]}")
            return g

        print("tools/list through the gateway:")
        for t in (await client.list_tools()).tools:
            a = t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else {}
            print(f"  {t.name}: annotations {a} -> reversibility {t.meta[GATE_META]['reversibility']}")

        print("calls:")
        await call("write_file", path="notes.txt", text="hello")
        await call("read_file", path="notes.txt")
        held = await call("delete_file", path="notes.txt")
        for who in ("sam", "ops"):
            out = gateway.gate.approve(Approval(held["decision_id"], held["action_digest"], who))
            print(f"  approval by {who} ({', '.join(DIRECTORY[who])}): {'counted' if out.run else 'refused'}"
                  f"{'' if out.run else ' - ' + out.message}")
            await call("delete_file", path="notes.txt")
        await call("delete_file", path="notes.txt")  # a new call: the approval was used
        await call("chmod_file", path="notes.txt", mode="600")
        await call("delete_file", path="/etc/passwd")
        await call("read_file", path="notes.txt")
        r = rt.resume("mcp-files", evidence={"incident_reviewed": True}, principal="ops")
        print(f"resume by ops: {'allowed' if r.allowed else 'refused'}")
        await call("read_file", path="notes.txt")

    runs = [e.body["receipt"] for e in rt.ledger.entries(kind="execution")]
    print(f"executions recorded: {len(runs)}; receipts: {runs}")
    print(f"decisions recorded: {len(rt.ledger.entries(kind='decision'))}")


def main() -> int:
    try:
        import anyio
        import mcp  # noqa: F401  (the client and the upstream server below)
    except ModuleNotFoundError as missing:  # a core install: say which extra, not a traceback
        sys.exit(f"{missing.name} is not installed: this example needs the extra, "
                 "pip install 'stopline[mcp]' (docs/integrations.md)")

    from policy_engine import Runtime

    db = Path(tempfile.mkdtemp()) / "stopline.db"
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{db}") as rt:
        anyio.run(agent, rt)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--file-server"]:
        file_server().run("stdio")
        raise SystemExit(0)
    raise SystemExit(main())
