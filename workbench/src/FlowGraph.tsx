import { useMemo } from "react";
import dagre from "@dagrejs/dagre";
import { Background, Controls, Edge as FlowEdge, Handle, MarkerType, Node, NodeProps, Position, ReactFlow } from "@xyflow/react";
import { Graph, Step } from "./api";

const WIDTH = 230;
const HEIGHT = 64;

type StepData = { step: Step; hit: boolean };

function StepNode({ data }: NodeProps<Node<StepData>>) {
  const { step, hit } = data;
  return (
    <div className={`node node-${step.type}${hit ? " hit" : ""}`} data-testid="graph-node" data-step={step.name}>
      <Handle type="target" position={Position.Left} />
      <div className="node-type">{step.type}</div>
      <div className="node-name">{step.name}</div>
      <div className="node-trigger">{step.trigger}</div>
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

const nodeTypes = { step: StepNode };

/** Steps in `flow` or a flow nested under it; "all" (null) is the whole project. */
function inFlow(step: Step, flow: string | null): boolean {
  return flow === null || step.flows.some((f) => f === flow || f.startsWith(flow + "/"));
}

export function FlowGraph(props: {
  graph: Graph;
  flow: string | null;
  highlight: Set<string>;
  onSelect?: (name: string) => void;
}) {
  const { nodes, edges } = useMemo(() => {
    const steps = props.graph.steps.filter((s) => inFlow(s, props.flow));
    const names = new Set(steps.map((s) => s.name));
    const links = props.graph.edges.filter((e) => names.has(e.source) && names.has(e.target));
    const layout = new dagre.graphlib.Graph({ multigraph: true });
    layout.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 90 });
    layout.setDefaultEdgeLabel(() => ({}));
    steps.forEach((s) => layout.setNode(s.name, { width: WIDTH, height: HEIGHT }));
    links.forEach((e, i) => layout.setEdge(e.source, e.target, {}, String(i)));
    dagre.layout(layout);
    const nodes: Node<StepData>[] = steps.map((s) => {
      const at = layout.node(s.name);
      return {
        id: s.name,
        type: "step",
        position: { x: at.x - WIDTH / 2, y: at.y - HEIGHT / 2 },
        data: { step: s, hit: props.highlight.has(s.name) },
      };
    });
    const edges: FlowEdge[] = links.map((e, i) => ({
      id: `${e.source}-${e.target}-${e.topic}-${i}`,
      source: e.source,
      target: e.target,
      label: e.topic,
      animated: props.highlight.has(e.source) && props.highlight.has(e.target),
      style: e.virtual ? { strokeDasharray: "6 4" } : undefined,
      markerEnd: { type: MarkerType.ArrowClosed },
      data: { virtual: e.virtual },
      className: e.virtual ? "virtual" : "",
    }));
    return { nodes, edges };
  }, [props.graph, props.flow, props.highlight]);

  return (
    <div className="canvas" data-testid="graph">
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        fitView
        minZoom={0.1}
        nodesDraggable={false}
        onNodeClick={(_, node) => props.onSelect?.(node.id)}
        proOptions={{ hideAttribution: true }}
      >
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
