"""Backpropagation: the lecture's two phases on a network small enough to follow by hand
(forward pass, loss, backward pass, one update, the loss going down), each gradient as
torch.autograd computes it next to the chain-rule product, and then the same gradients
measured per layer on the course MLP, where sigmoid makes them vanish."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core import backprop as bp
from core.config import RunConfig
from core.experiments import gradient_norms_frame
from core.launch import launch_activation_comparison
from ui import charts
from ui.navigation import header
from ui.state import dataset, executor, store
from ui.widgets import group_view, launch

header("Backpropagation", "Forward pass: inputs flow through the network to produce outputs. Backward pass: the "
                          "gradient of the loss is computed and applied to adjust the weights. Step through both.")

STAGES = ("1. Forward pass", "2. Loss", "3. Backward pass", "4. Update")


# --- the state: parameters live in the widgets' keys, so steps and edits are one thing -----------

def _reset():
    for name, value in bp.START.items():
        st.session_state[f"bp_{name}"] = value
    st.session_state.update(bp_x1=bp.START_INPUTS[0], bp_x2=bp.START_INPUTS[1], bp_t1=bp.START_TARGETS[0],
                            bp_t2=bp.START_TARGETS[1], bp_lr=0.5, bp_stage=0, bp_losses=[], bp_last=None,
                            bp_biases=False)


if "bp_stage" not in st.session_state:
    _reset()


def params() -> dict:
    return {name: float(st.session_state[f"bp_{name}"]) for name in bp.PARAMS}


def inputs():
    s = st.session_state
    return (float(s["bp_x1"]), float(s["bp_x2"])), (float(s["bp_t1"]), float(s["bp_t2"]))


def _set_params(new: dict) -> None:
    for name, value in new.items():
        st.session_state[f"bp_{name}"] = round(value, 10)


def _next():
    s = st.session_state
    x, t = inputs()
    if s["bp_stage"] == 2:  # backward -> update: apply it
        p = params()
        grads = bp.autograd_gradients(p, x, t, s["bp_act"])
        s["bp_last"] = {"before": p, "grads": grads, "loss": bp.loss(p, x, t, s["bp_act"])}
        _set_params(bp.sgd_step(p, grads, float(s["bp_lr"]), bool(s["bp_biases"])))
        s["bp_losses"] = s["bp_losses"] + [s["bp_last"]["loss"]]
    s["bp_stage"] = (s["bp_stage"] + 1) % 4


def _run_n():
    s = st.session_state
    x, t = inputs()
    p, losses = bp.train_steps(params(), x, t, float(s["bp_lr"]), int(s["bp_n"]), s["bp_act"], bool(s["bp_biases"]))
    _set_params(p)
    s["bp_losses"] = s["bp_losses"] + losses[:-1]
    s["bp_stage"], s["bp_last"] = 0, None


def _edited():
    st.session_state["bp_stage"], st.session_state["bp_last"] = 0, None


# --- controls ---------------------------------------------------------------------------------------

c1, c2, c3, c4 = st.columns([1.2, 1, 1, 1])
activation = c1.selectbox("Activation", bp.ACTIVATIONS, key="bp_act", on_change=_edited)
c2.number_input("Learning rate", 0.001, 10.0, step=0.1, key="bp_lr")
c3.button("Next step", type="primary", icon=":material/skip_next:", on_click=_next, key="bp_next")
with c4:
    st.number_input("N", 1, 10_000, 100, key="bp_n", label_visibility="collapsed")
    st.button("Run N steps", on_click=_run_n, key="bp_run")
st.toggle("Update the biases too", key="bp_biases", on_change=_edited,
          help="Matt Mazur's worked example updates the weights only; a framework's optimizer moves the biases too.")
with st.expander("Edit the network: inputs, targets, weights and biases"):
    cols = st.columns(4)
    for i, (name, label) in enumerate([("x1", "input i1"), ("x2", "input i2"), ("t1", "target of o1"),
                                       ("t2", "target of o2")]):
        cols[i].number_input(label, -10.0, 10.0, step=0.05, key=f"bp_{name}", on_change=_edited, format="%.4f")
    cols = st.columns(6)
    for i, name in enumerate(bp.PARAMS):
        cols[i % 6].number_input(name, -20.0, 20.0, step=0.05, key=f"bp_{name}", on_change=_edited, format="%.4f")
    st.button("Back to the worked example", on_click=_reset, key="bp_reset",
              help="Matt Mazur's numbers: inputs 0.05, 0.10, targets 0.01, 0.99.")

p = params()
x, t = inputs()
stage = st.session_state["bp_stage"]
values = bp.forward(p, x, activation)
current_loss = bp.loss(p, x, t, activation)
grads = bp.autograd_gradients(p, x, t, activation)
st.progress((stage + 1) / 4, text=" → ".join(f"**{s}**" if i == stage else s for i, s in enumerate(STAGES)))


# --- the drawing --------------------------------------------------------------------------------------

def network_chart(show_grads: bool) -> alt.Chart:
    nodes, edges = bp.graph_frames(p, x, t, activation, grads if show_grads else None)
    scale = alt.Scale(domain=[-0.3, 2.6])
    lines = alt.Chart(edges).mark_rule(strokeWidth=3).encode(
        x=alt.X("x:Q", scale=scale, axis=None), y=alt.Y("y:Q", scale=alt.Scale(domain=[-0.5, 2.5]), axis=None),
        x2="x2:Q", y2="y2:Q",
        color=alt.Color("gradient:Q" if show_grads else "value:Q", scale=alt.Scale(scheme="redblue", domainMid=0),
                        title="∂L/∂w" if show_grads else "weight"),
        tooltip=["weight", alt.Tooltip("value:Q", format=".5f"), alt.Tooltip("gradient:Q", format=".6f")])
    labels = alt.Chart(edges).mark_text(fontSize=12, lineBreak="\n", dy=-6).encode(
        x="lx:Q", y="ly:Q", text="label:N")
    dots = alt.Chart(nodes).mark_circle(size=1600, color="#eeeeee", stroke="black").encode(x="x:Q", y="y:Q")
    names = alt.Chart(nodes).mark_text(fontWeight="bold").encode(x="x:Q", y="y:Q", text="node:N")
    texts = alt.Chart(nodes).mark_text(fontSize=12, dy=34, lineBreak="\n").encode(x="x:Q", y="y:Q", text="text:N")
    return (lines + labels + dots + names + texts).properties(height=380)


st.altair_chart(network_chart(stage >= 2), width="stretch")

if stage == 0:
    st.markdown(f"**Forward pass.** Each unit adds its weighted inputs and its bias, z = Σ w·a + b, and applies "
                f"{activation}: a = f(z). The outputs are o1 = **{values['o1']:.6f}** and o2 = "
                f"**{values['o2']:.6f}**.")
elif stage == 1:
    st.markdown(f"**Loss.** Squared error L = ½[(t1 − o1)² + (t2 − o2)²] = ½[({t[0]} − {values['o1']:.6f})² + "
                f"({t[1]} − {values['o2']:.6f})²] = **{current_loss:.9f}**.")
elif stage == 2:
    st.markdown("**Backward pass.** The gradient of the loss flows back: each weight's gradient is the product "
                "of the local derivatives on the way from the loss to it (the chain rule), summed over the ways. "
                "torch.autograd computes the same numbers; both are shown.")
    check = bp.chain_rule_gradients(p, x, t, activation)
    table = pd.DataFrame({"parameter": list(bp.PARAMS),
                          "autograd ∂L/∂w": [f"{grads[k]:.9f}" for k in bp.PARAMS],
                          "chain rule product": [f"{check[k]:.9f}" for k in bp.PARAMS]})
    table["equal"] = table["autograd ∂L/∂w"] == table["chain rule product"]
    st.dataframe(table, hide_index=True, width="stretch")
    which = st.selectbox("Follow one weight's chain rule", bp.PARAMS, index=bp.PARAMS.index("w1"), key="bp_which")
    for path in bp.chain_rule(p, x, t, which, activation):
        st.markdown(f"`{path['path']}`: " + " × ".join(f"{v:.6f}" for _, v in path["factors"])
                    + f" = **{path['product']:.9f}**")
        st.caption(" · ".join(label for label, _ in path["factors"]))
else:
    last = st.session_state.get("bp_last")
    if last:
        rows = [{"parameter": k, "before": last["before"][k], "gradient": last["grads"][k],
                 "after": p[k]} for k in bp.PARAMS]
        moved = "weight and bias" if st.session_state["bp_biases"] else "weight (the biases stay, as in Mazur's example)"
        st.markdown(f"**Update.** Every {moved} moves against its gradient with learning rate "
                    f"{st.session_state['bp_lr']}: the loss went from {last['loss']:.9f} to **{current_loss:.9f}**.")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        x_now, t_now = inputs()
        if (last["before"] == bp.START and (x_now, t_now) == (bp.START_INPUTS, bp.START_TARGETS)
                and float(st.session_state["bp_lr"]) == 0.5 and not st.session_state["bp_biases"]):
            st.caption(f"This is Matt Mazur's first update: his post prints the same updated weights (w5 = "
                       f"{p['w5']:.8f}, w1 = {p['w1']:.9f}) and the new loss as {bp.MAZUR_PRINTED_LOSS:.9f}; the loss "
                       f"of those weights, computed here, is {current_loss:.9f}.")

losses = st.session_state["bp_losses"] + [current_loss]
if len(losses) > 1:
    # The domain hugs the losses (a log axis left to Vega spans 0.1-1 for two nearby losses and labels it
    # "0.00-1.00"); ticks with three significant digits.
    lo, hi = min(losses), max(losses)
    st.altair_chart(alt.Chart(pd.DataFrame({"step": range(len(losses)), "loss": losses})).mark_line(point=True).encode(
        x=alt.X("step:Q", title="update", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("loss:Q", title="loss (squared error)", axis=alt.Axis(format=".3~g"),
                scale=alt.Scale(type="log", domain=[lo / 1.02, hi * 1.02], nice=False) if lo > 0 else alt.Scale()),
        tooltip=["step", alt.Tooltip("loss:Q", format=".9f")]).properties(height=220, title="The loss going down"),
        width="stretch")
st.caption("To see it as an animation, the lecture points to MLU-Explain's neural-network essay "
           "(mlu-explain.github.io/neural-networks).")

# --- vanishing gradients on real runs ------------------------------------------------------------------
st.subheader("Gradients per layer on the course MLP: sigmoid against ReLU")
st.markdown("The backward pass multiplies by f'(z) at every layer. The sigmoid's derivative is at most 0.25, so "
            "the gradient shrinks on its way back to the first layers (vanishing gradients); ReLU's is 1 for "
            "active units. Train the course MLP both ways and compare the gradient norm of each layer's weights.")
c1, c2 = st.columns(2)
epochs = c1.number_input("Epochs", 1, 20, 3, key="bp_epochs")
data_name = c2.selectbox("Data set", ["mnist-sample", "mnist"], key="bp_data")
if st.button("Train the course MLP with sigmoid and with ReLU", key="bp_go"):
    launch(lambda: launch_activation_comparison(executor(), RunConfig.from_preset(
        "mlp", dataset=data_name, epochs=int(epochs), name="course MLP"), dataset=dataset(data_name)), show_in="bp_group")


def gradients(runs: list[dict]) -> None:
    labels = {r["id"]: store().config(r["id"]).extra.get("activation", r["name"]) for r in runs}
    frame = gradient_norms_frame({labels[r["id"]]: store().history(r["id"]) for r in runs})
    if frame.empty:
        st.info("Waiting for the first epoch...")
        return
    epoch = int(frame.epoch.max())
    last = frame[frame.epoch == epoch]
    st.altair_chart(alt.Chart(last).mark_line(point=True).encode(
        x=alt.X("depth:O", title="layer (1 = nearest the input)"),
        y=alt.Y("norm:Q", scale=alt.Scale(type="log"), title="gradient norm (log)"),
        color=alt.Color("run:N", title="activation"), tooltip=["run", "layer", alt.Tooltip("norm:Q", format=".2e")],
    ).properties(height=300, title=f"Mean gradient norm of each layer's weights, epoch {epoch}"), width="stretch")
    ratio = last.pivot_table(index="run", columns="depth", values="norm")
    if 1 in ratio and ratio.columns.max() > 1:
        shrink = ratio[1] / ratio[ratio.columns.max()]
        st.markdown(" · ".join(f"**{run}**: the first layer's gradient is {value:.3g}x the last layer's"
                               for run, value in shrink.items()))
    st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(
        x=charts.epoch_x(frame["epoch"]), y=alt.Y("norm:Q", scale=charts.value_scale(frame["norm"], log=True),
                                                  title="norm"),
        color=alt.Color("layer:N", legend=alt.Legend(orient="top")),
        # a solid and a dashed ring as the legend's symbols: with symbolType "stroke" it drew none,
        # with the defaults two filled dots that hid the dash
        strokeDash=alt.StrokeDash("run:N", title="activation", scale=alt.Scale(range=[[1, 0], [4, 2]]),
                                  legend=alt.Legend(orient="top", symbolFillColor="transparent", symbolSize=200,
                                                    symbolStrokeColor="black", symbolStrokeWidth=1.5)),
        tooltip=["run", "layer", "epoch", alt.Tooltip("norm:Q", format=".2e")],
    ).properties(height=300, title="Over training"), width="stretch")


group_view("gradients", "Comparison", "bp_group", gradients)
