"""The model as a tree: layers with their shapes, and their parameters; moving the cursor
onto a parameter selects it for the tensor view."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree

from gdstep.tui.frame import Model


class ModelTree(Tree[str], inherit_bindings=False):
    """Only the cursor keys of Tree: space, shift+arrows belong to the app (next phase,
    moving the element cursor)."""

    BINDINGS = [
        Binding("up", "cursor_up", "Parameter above", show=False),
        Binding("down", "cursor_down", "Parameter below", show=False),
        Binding("enter", "select_cursor", "Select", show=False),
    ]

    class ParameterSelected(Message):
        def __init__(self, name: str) -> None:
            self.name = name
            super().__init__()

    def __init__(self, model: Model, *, id: str | None = None) -> None:
        super().__init__(model.scenario, id=id)
        self.show_root = False
        self.guide_depth = 2
        self._parameter_nodes = {}
        for info in model.layers:
            layer = self.root.add(f"{info.name} {info.text}", data=None, expand=True, allow_expand=False)
            for name in info.params:
                short = name.rsplit(".", 1)[-1] if name.startswith(info.name + ".") else name
                frozen = "" if name in model.trainable else " frozen"
                dims = "×".join(map(str, model.shapes[name])) or "scalar"
                self._parameter_nodes[name] = layer.add_leaf(f"{short} {dims}{frozen}", data=name)
        self.first_parameter = model.first_parameter

    def select_parameter(self, name: str) -> None:
        node = self._parameter_nodes.get(name)
        if node is not None:
            self.move_cursor(node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(self.ParameterSelected(event.node.data))

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        event.stop()
