"""The model as a tree: layers with their shapes, and their parameters; moving the cursor
onto a parameter selects it for the tensor view, onto a layer shows that layer over the
batch (its input, output and δ). A model that returns several tensors lists them last
(the batch view shows their values after forward)."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree

from gdstep.tui.frame import Model


class ModelTree(Tree[str], inherit_bindings=False):
    """Only the cursor keys of Tree: space, shift+arrows belong to the app (next phase,
    moving the element cursor)."""

    BINDINGS = [
        Binding("up", "cursor_up", "Row above (a layer or a parameter)", show=False),
        Binding("down", "cursor_down", "Row below (a layer or a parameter)", show=False),
        Binding("enter", "select_cursor", "Select", show=False),
    ]

    class ParameterSelected(Message):
        def __init__(self, name: str) -> None:
            self.name = name
            super().__init__()

    class LayerSelected(Message):
        """A layer row: the tensor view shows that layer's input, output and δ."""

        def __init__(self, layer: str) -> None:
            self.layer = layer
            super().__init__()

    def __init__(self, model: Model, *, id: str | None = None) -> None:
        super().__init__(model.scenario, id=id)
        self.show_root = False
        self.guide_depth = 2
        self._parameter_nodes = {}
        self._layer_nodes = {}
        users: dict[str, list[str]] = {}
        for info in model.layers:
            for name in info.params:
                users.setdefault(name, []).append(info.name)
        last = None
        for info in model.layers:
            layer = last = self.root.add(f"{info.name} {info.text}", data=None, expand=True, allow_expand=False)
            self._layer_nodes[layer.id] = info.name
            for name in info.params:
                if name in self._parameter_nodes or name not in model.shapes:
                    # a tied parameter: selectable once, where it is first used
                    layer.add_leaf(f"{name} (shared, above)", data=None)
                    continue
                short = name.rsplit(".", 1)[-1] if name.startswith(info.name + ".") else name
                frozen = "" if name in model.trainable else " frozen"
                dims = "×".join(map(str, model.shapes[name])) or "scalar"
                others = [u for u in users[name] if u != info.name]
                shared = f" shared with {', '.join(others)}" if others else ""
                self._parameter_nodes[name] = layer.add_leaf(f"{short} {dims}{frozen}{shared}", data=name)
        if model.outputs:           # a model that returns several tensors: each, with its shape
            outputs = last if last is not None and model.layers[-1].name == "(output)" else \
                self.root.add("(outputs)", data=None, expand=True, allow_expand=False)
            for name, shape in model.outputs:
                outputs.add_leaf(f"{name} {'×'.join(map(str, shape)) or 'scalar'}", data=None)
        self.first_parameter = model.first_parameter

    def select_parameter(self, name: str) -> None:
        node = self._parameter_nodes.get(name)
        if node is not None:
            self.move_cursor(node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(self.ParameterSelected(event.node.data))
        elif event.node.id in self._layer_nodes:
            self.post_message(self.LayerSelected(self._layer_nodes[event.node.id]))

    def render_label(self, node, base_style, style):
        """A label too long for the tree's width is cut at a word, with an ellipsis (never
        mid-word, as "Linear(1 → 1), no")."""
        label = super().render_label(node, base_style, style)
        width = self.scrollable_content_region.width - (0 if node.data is None else self.guide_depth)
        if width <= 4 or label.cell_len <= width:
            return label
        text = label.plain
        cut = text.rfind(" ", 0, width)
        keep = cut if cut > 0 else width - 1
        while keep > 1 and text[keep - 1] in " ,":
            keep -= 1
        label = label[:keep]
        label.append("…")
        return label

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        event.stop()
