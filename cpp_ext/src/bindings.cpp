// pybind11 bindings: module streamscore_native._core.
//
// Python objects are only touched with the GIL held: columns are validated and their buffers taken (zero-copy,
// through the buffer protocol) first, the GIL is released for normalisation and inference, and the buffers are
// released after the GIL is re-acquired (py::buffer_info's destructor calls PyBuffer_Release).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "scorer.hpp"

namespace py = pybind11;

#ifndef STREAMSCORE_VERSION
#define STREAMSCORE_VERSION "0.0.0"
#endif
#ifndef STREAMSCORE_TORCH_VERSION
#define STREAMSCORE_TORCH_VERSION "unknown"
#endif

namespace {

std::string type_name(py::handle o) { return py::str(py::type::handle_of(o).attr("__name__")); }

std::string shape_str(const std::vector<py::ssize_t>& shape) {
  return "(" + ss::join_ints(shape.begin(), shape.end()) + (shape.size() == 1 ? ",)" : ")");
}

// Native-endian single-character struct format code, or 0 for anything else ('>f', 'Zf', ...).
char format_code(const std::string& f) {
  std::string s = f;
  if (!s.empty() && (s[0] == '@' || s[0] == '=' || s[0] == '<')) s = s.substr(1);
  return s.size() == 1 ? s[0] : 0;
}

std::string col_label(size_t j, const std::vector<std::string>& names) {
  return "column " + std::to_string(j) + " ('" + names[j] + "')";
}

// Validates `columns` against the scorer's features and takes their buffers. Messages match udfs/scoring.py's
// ReferenceScorer word for word (the tests run the same cases on both). numpy arrays are read through numpy's own
// API (no Py_buffer round trip); anything else through the buffer protocol. `keep` holds a reference to every
// column, so they outlive the GIL-free part even if the caller's list is changed by another thread meanwhile.
struct Held {
  std::vector<py::object> keep;
  std::vector<py::buffer_info> buffers;
};

int64_t take_columns(py::handle columns, const std::vector<std::string>& names, Held& held,
                     std::vector<ss::Column>& cols) {
  if (py::isinstance<py::array>(columns) || py::isinstance<py::str>(columns) ||
      py::isinstance<py::bytes>(columns) || !PySequence_Check(columns.ptr()))
    throw py::type_error("columns must be a sequence of 1-D arrays (one per feature), got " + type_name(columns));
  py::sequence seq = py::reinterpret_borrow<py::sequence>(columns);
  const size_t d = names.size();
  if (seq.size() != d) {
    std::string list;
    for (size_t j = 0; j < d; ++j) list += (j ? ", " : "") + names[j];
    throw py::value_error("expected " + std::to_string(d) + " columns (" + list + "), got " +
                          std::to_string(seq.size()));
  }
  int64_t n = -1;
  held.keep.reserve(d);
  cols.reserve(d);
  for (size_t j = 0; j < d; ++j) {
    py::object item = seq[j];
    std::vector<py::ssize_t> shape;
    py::ssize_t stride = 0, itemsize = 0;
    const void* ptr = nullptr;
    char code = 0;
    std::string format;
    if (py::isinstance<py::array>(item)) {
      py::array a = py::reinterpret_borrow<py::array>(item);
      shape.assign(a.shape(), a.shape() + a.ndim());
      if (a.ndim() == 1) stride = a.strides(0);
      const py::dtype dt = a.dtype();
      itemsize = dt.itemsize();
      const char kind = dt.kind();
      if (dt.byteorder() != '>') code = kind == 'f' ? 'f' : (kind == 'i' ? 'q' : 0);
      ptr = a.data();
    } else {
      if (!PyObject_CheckBuffer(item.ptr()))
        throw py::type_error(col_label(j, names) + " must be a numpy array (buffer protocol), got " +
                             type_name(item));
      held.buffers.emplace_back(py::reinterpret_borrow<py::buffer>(item).request());
      const py::buffer_info& info = held.buffers.back();
      shape = info.shape;
      if (info.ndim == 1) stride = info.strides[0];
      itemsize = info.itemsize;
      format = info.format;
      code = format_code(format);
      ptr = info.ptr;
    }
    held.keep.push_back(item);
    if (shape.size() != 1)
      throw py::value_error(col_label(j, names) + " must be 1-D, got shape " + shape_str(shape));
    ss::Column c;
    if (code == 'f' && itemsize == 4) {
      c.kind = ss::Column::Kind::Float32;
    } else if ((code == 'q' || code == 'l') && itemsize == 8) {
      c.kind = ss::Column::Kind::Int64;
    } else {
      const std::string dtype = py::hasattr(item, "dtype") ? std::string(py::str(item.attr("dtype"))) : format;
      throw py::type_error(col_label(j, names) + " has dtype " + dtype + "; expected float32 or int64");
    }
    if (shape[0] > 1 && stride != itemsize)
      throw py::value_error(col_label(j, names) + " is not contiguous (stride " + std::to_string(stride) +
                            " bytes); pass np.ascontiguousarray(column)");
    if (n < 0) {
      n = shape[0];
    } else if (shape[0] != n) {
      throw py::value_error(col_label(j, names) + " has length " + std::to_string(shape[0]) + ", expected " +
                            std::to_string(n) + " (the length of " + col_label(0, names) + ")");
    }
    c.data = ptr;
    cols.push_back(c);
  }
  return n < 0 ? 0 : n;
}

at::ScalarType scalar_type_of(const py::array& a) {
  const py::dtype dt = a.dtype();
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  const char bo = dt.byteorder();
  if (bo == '>') throw py::type_error("big-endian arrays are not supported; use arr.astype(arr.dtype.newbyteorder('='))");
  if (kind == 'f' && size == 4) return at::kFloat;
  if (kind == 'f' && size == 8) return at::kDouble;
  if (kind == 'f' && size == 2) return at::kHalf;
  if (kind == 'i' && size == 8) return at::kLong;
  if (kind == 'i' && size == 4) return at::kInt;
  if (kind == 'i' && size == 2) return at::kShort;
  if (kind == 'i' && size == 1) return at::kChar;
  if (kind == 'u' && size == 1) return at::kByte;
  if (kind == 'b') return at::kBool;
  throw py::type_error("unsupported input dtype " + std::string(py::str(static_cast<const py::handle&>(dt))));
}

py::dtype dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return py::dtype::of<float>();
    case at::kDouble: return py::dtype::of<double>();
    case at::kLong: return py::dtype::of<int64_t>();
    case at::kInt: return py::dtype::of<int32_t>();
    case at::kShort: return py::dtype::of<int16_t>();
    case at::kChar: return py::dtype::of<int8_t>();
    case at::kByte: return py::dtype::of<uint8_t>();
    case at::kBool: return py::dtype::of<bool>();
    case at::kHalf: return py::dtype("float16");
    default: throw ss::TypeError(std::string("unsupported output dtype ") + c10::toString(t));
  }
}

// A CPU, contiguous tensor -> a new numpy array (a copy; the tensor's memory may alias the caller's inputs).
py::array tensor_to_numpy(const at::Tensor& t) {
  std::vector<py::ssize_t> shape(t.sizes().begin(), t.sizes().end());
  py::array out(dtype_of(t.scalar_type()), shape);
  if (t.numel() > 0) std::memcpy(out.mutable_data(), t.data_ptr(), t.numel() * t.element_size());
  return out;
}

py::object ivalue_to_py(const c10::IValue& v) {
  if (v.isTensor()) return tensor_to_numpy(v.toTensor());
  if (v.isTuple()) {
    const auto& el = v.toTupleRef().elements();
    py::tuple out(el.size());
    for (size_t i = 0; i < el.size(); ++i) out[i] = ivalue_to_py(el[i]);
    return out;
  }
  if (v.isList()) {
    py::list out;
    for (const c10::IValue& e : v.toListRef()) out.append(ivalue_to_py(e));
    return out;
  }
  if (v.isGenericDict()) {
    py::dict out;
    for (const auto& kv : v.toGenericDict()) out[py::str(kv.key().toStringRef())] = ivalue_to_py(kv.value());
    return out;
  }
  throw ss::TypeError("unsupported model output " + v.tagKind());
}

py::object model_run(const ss::Model& m, py::handle inputs) {
  if (py::isinstance<py::array>(inputs) || !PySequence_Check(inputs.ptr()) ||
      py::isinstance<py::str>(inputs))
    throw py::type_error("inputs must be a list of numpy arrays (one per forward() argument), got " +
                         type_name(inputs));
  py::sequence seq = py::reinterpret_borrow<py::sequence>(inputs);
  std::vector<py::array> arrays;
  std::vector<at::Tensor> tensors;
  for (size_t i = 0; i < seq.size(); ++i) {
    py::object o = seq[i];
    if (!py::isinstance<py::array>(o))
      throw py::type_error("input " + std::to_string(i) + " must be a numpy array, got " + type_name(o));
    py::array a = py::reinterpret_borrow<py::array>(o);
    if (!(a.flags() & py::array::c_style))
      throw py::value_error("input " + std::to_string(i) +
                            " is not C-contiguous; pass np.ascontiguousarray(array)");
    const at::ScalarType st = scalar_type_of(a);
    std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
    // Zero-copy view of the caller's array; kept alive by `arrays` until the call returns.
    tensors.push_back(at::from_blob(const_cast<void*>(a.data()), shape, at::TensorOptions().dtype(st)));
    arrays.push_back(a);
  }
  c10::IValue out;
  {
    py::gil_scoped_release release;
    out = m.forward(tensors);
    tensors.clear();
  }
  return ivalue_to_py(out);
}

py::array_t<float> fraud_score(const ss::FraudScorer& s, py::handle columns) {
  Held held;
  std::vector<ss::Column> cols;
  const int64_t n = take_columns(columns, s.spec().names, held, cols);
  py::array_t<float> out(n);
  if (n > 0) {
    float* dst = out.mutable_data();
    py::gil_scoped_release release;
    s.score(cols, n, dst);
  }
  return out;  // `held` (references, Py_buffers) is released here, with the GIL
}

py::array_t<float> fraud_preprocess(const ss::FraudScorer& s, py::handle columns) {
  Held held;
  std::vector<ss::Column> cols;
  const int64_t n = take_columns(columns, s.spec().names, held, cols);
  py::array_t<float> out({n, s.input_width()});
  if (n > 0) {
    float* dst = out.mutable_data();
    py::gil_scoped_release release;
    s.preprocess(cols, n, dst);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "streamscore native scorer (LibTorch). See streamscore_native for the documented facade.";
  m.attr("__version__") = STREAMSCORE_VERSION;
  m.attr("built_with_torch") = STREAMSCORE_TORCH_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ss::TypeError& e) {
      py::set_error(PyExc_TypeError, e.what());
    } catch (const ss::FileNotFound& e) {
      py::set_error(PyExc_FileNotFoundError, e.what());
    } catch (const c10::Error& e) {
      py::set_error(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  m.def("cuda_available", &ss::cuda_available, "Whether LibTorch sees a usable CUDA device.");
  m.def("cuda_device_count", &ss::cuda_device_count);
  m.def("set_num_threads", &ss::set_num_threads, py::arg("n"),
        "Sets LibTorch's intra-op thread count (process-wide; shared with `torch` if it is imported).");
  m.def("get_num_threads", &ss::get_num_threads);
  m.def("cpu_kernels", &ss::cpu::available_isas,
        "The CPU kernel instruction sets this machine runs, best first (FraudScorer(cpu_kernel=...)).");
  m.def("resolve_device", [](const std::string& spec) { return ss::resolve_device(spec).str(); }, py::arg("spec"));

  py::class_<ss::Model>(m, "Model",
                        "A TorchScript module on one device. run() may be called from several threads at once; "
                        "it releases the GIL.")
      .def(py::init<const std::string&, const std::string&>(), py::arg("path"), py::arg("device") = "auto",
           py::call_guard<py::gil_scoped_release>())
      .def("run", &model_run, py::arg("inputs"),
           "Calls forward(*inputs); inputs are C-contiguous numpy arrays (float32/float64/int64/int32/...). "
           "Returns a numpy array (or a tuple/list/dict of them, mirroring the module's output).")
      .def_property_readonly("path", &ss::Model::path)
      .def_property_readonly("device", &ss::Model::device_str);

  py::class_<ss::FraudScorer>(m, "FraudScorer",
                              "Fraud model scorer: per-feature log1p/standardise/clip, then the MLP. score() may be "
                              "called from several threads at once; it releases the GIL.")
      .def(py::init([](const std::string& model_path, std::vector<std::string> features, std::vector<bool> log1p,
                       std::vector<double> mean, std::vector<double> std, double clip, const std::string& device,
                       bool fused, const std::string& cpu_kernel) {
             ss::FeatureSpec spec{std::move(features), std::move(log1p), std::move(mean), std::move(std), clip};
             py::gil_scoped_release release;
             return std::make_unique<ss::FraudScorer>(model_path, std::move(spec), device, fused, cpu_kernel);
           }),
           py::arg("model_path"), py::arg("features"), py::arg("log1p"), py::arg("mean"), py::arg("std"),
           py::arg("clip"), py::arg("device") = "auto", py::arg("fused") = true, py::arg("cpu_kernel") = "auto")
      .def("score", &fraud_score, py::arg("columns"),
           "Scores n events: columns is a sequence of d 1-D contiguous float32/int64 arrays of equal length n, in "
           "feature order. Returns float32 probabilities [n]; an empty batch returns an empty array.")
      .def("preprocess", &fraud_preprocess, py::arg("columns"),
           "The normalised [n, d] float32 model input for the given columns (for tests and debugging).")
      .def_property_readonly("input_width", &ss::FraudScorer::input_width)
      .def_property_readonly("features", [](const ss::FraudScorer& s) { return s.spec().names; })
      .def_property_readonly("model_path", [](const ss::FraudScorer& s) { return s.model().path(); })
      .def_property_readonly("device", [](const ss::FraudScorer& s) { return s.model().device_str(); })
      .def_property_readonly("fast_path", &ss::FraudScorer::fast_path,
                             "True when the Linear/ReLU chain runs fused (verified against forward() at load).")
      .def_property_readonly("kernel", &ss::FraudScorer::kernel,
                             "What runs the MLP: a CPU ISA ('avx512', 'avx2', 'generic': our kernels), 'aten' "
                             "(LibTorch matmuls) or 'torchscript' (the module's forward()).")
      .def_property_readonly("probe_max_diff", &ss::FraudScorer::probe_max_diff,
                             "Largest |difference| from forward() on the probe batch checked at load.");
}
