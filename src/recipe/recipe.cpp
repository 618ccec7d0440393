#include "kd/recipe/recipe.h"

#include <cmath>
#include <filesystem>

#include "kd/losses/registry.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::recipe {

namespace fs = std::filesystem;

namespace {

std::string resolve_path(const std::string& path, const std::string& base_folder) {
  if (path.empty() || fs::path(path).is_absolute() || base_folder.empty()) return path;
  return (fs::path(base_folder) / path).lexically_normal().string();
}

// `train: file.csv` or `train: {path: ..., images|inputs: ..., labels: ...}`.
data::DataFiles parse_files(YamlSection& parent, const std::string& key, const std::string& base_folder) {
  data::DataFiles files;
  YAML::Node node = parent.node(key);
  if (!node || node.IsNull()) return files;
  if (node.IsScalar()) {
    files.path = resolve_path(node.Scalar(), base_folder);
    return files;
  }
  YamlSection section(node, parent.file(), parent.path() + "." + key);
  files.path = resolve_path(section.get<std::string>("path", ""), base_folder);
  std::string images = section.get<std::string>("images", "");
  std::string inputs = section.get<std::string>("inputs", "");
  if (!images.empty() && !inputs.empty()) fail("{}: give images or inputs, not both", section.where("inputs"));
  files.inputs = resolve_path(images.empty() ? inputs : images, base_folder);
  files.labels = resolve_path(section.get<std::string>("labels", ""), base_folder);
  section.finish();
  return files;
}

// A column given by name or index, as text (the tabular layer tells names from indices).
std::vector<std::string> column_list(YamlSection& section, const std::string& key) {
  YAML::Node node = section.node(key);
  std::vector<std::string> columns;
  if (!node || node.IsNull()) return columns;
  if (node.IsScalar()) return {node.Scalar()};
  if (!node.IsSequence()) fail("{}: expected a list of column names or indices", section.where(key));
  for (const auto& item : node) {
    if (!item.IsScalar()) fail("{}: expected a list of column names or indices", section.where(key));
    columns.push_back(item.Scalar());
  }
  return columns;
}

}  // namespace

data::DataSpec parse_data_section(YamlSection section, Task task, uint64_t seed, const std::string& base_folder) {
  data::DataSpec spec;
  spec.task(task).seed(seed);
  try {
    spec.format(section.get<std::string>("format", ""));
    spec.train(parse_files(section, "train", base_folder));
    spec.test(parse_files(section, "test", base_folder));
    spec.transfer(resolve_path(section.get<std::string>("transfer", ""), base_folder));
    spec.test_fraction(section.get<double>("test_fraction", spec.test_fraction()));
    spec.val_fraction(section.get<double>("val_fraction", spec.val_fraction()));
    spec.folds(section.get<int64_t>("folds", 0));
    spec.labeled(section.get<int64_t>("labeled", 0));
    spec.train_limit(section.get<int64_t>("train_limit", 0));
    spec.test_limit(section.get<int64_t>("test_limit", 0));
    spec.normalize(data::NormalizeOptions()
                       .mode(section.get<std::string>("normalize", "standard"))
                       .scope(section.get<std::string>("normalize_scope", "auto")));
    data::validate(spec.normalize());
    spec.normalize_target(section.get<bool>("normalize_target", true));

    spec.csv(data::CsvOptions()
                 .delimiter(section.get<std::string>("delimiter", "auto"))
                 .header(section.get<std::string>("header", "auto")));
    data::TabularOptions tabular;
    tabular.task(task);
    tabular.target(section.get<std::string>("target", ""));
    tabular.drop(column_list(section, "drop"));
    tabular.categorical(column_list(section, "categorical"));
    tabular.categorical_encoding(section.get<std::string>("categorical_encoding", "onehot"));
    tabular.missing(section.get<std::string>("missing", "error"));
    auto missing_values = column_list(section, "missing_values");
    if (!missing_values.empty()) tabular.missing_values(missing_values);
    spec.tabular(tabular);

    data::ImageFolderOptions images;
    YAML::Node size = section.node("image_size");
    if (size && size.IsScalar()) {
      auto side = section.get<int64_t>("image_size", 32);
      images.height(side).width(side);
    } else if (size && size.IsSequence() && size.size() == 2) {
      auto hw = section.get<std::vector<int64_t>>("image_size", {});
      images.height(hw[0]).width(hw[1]);
    } else if (size && !size.IsNull()) {
      fail("{}: expected a size or [height, width]", section.where("image_size"));
    }
    images.channels(section.get<int64_t>("channels", 0));
    spec.images(images);

    // Text: the text's column or key, the label's (target, as for CSV), the ids per text, the tokenizer.
    data::TextOptions text;
    text.text(section.get<std::string>("text", "text")).target(tabular.target());
    text.max_length(section.get<int64_t>("max_length", 0));
    if (text.max_length() < 0) fail("{}: {} is not a length (0 = fitted to the texts)", section.where("max_length"), text.max_length());
    if (section.has("tokenizer")) {
      YamlSection tokenizer = section.section("tokenizer");
      data::TokenizerSpec t;
      t.vocab(resolve_path(tokenizer.get<std::string>("vocab", ""), base_folder));
      t.model(resolve_path(tokenizer.get<std::string>("model", ""), base_folder));
      t.train(tokenizer.get<std::string>("train", ""));
      t.vocab_size(tokenizer.get<int64_t>("vocab_size", t.vocab_size()));
      t.lowercase(tokenizer.get<std::string>("lowercase", "auto"));
      tokenizer.finish();
      text.tokenizer(t);
    } else {
      text.tokenizer(data::TokenizerSpec().train("sentencepiece"));
    }
    spec.text(text);
  } catch (const Error& e) {
    // Library validation speaks of fields by recipe name already; add the file.
    std::string message = e.what();
    if (!starts_with(message, section.file())) throw Error(section.file() + ": " + message);
    throw;
  }
  section.finish();
  return spec;
}

models::ZooSpec parse_zoo_spec(YamlSection section) {
  models::ZooSpec spec;
  spec.arch(section.require<std::string>("arch"));
  spec.hidden(section.get<std::vector<int64_t>>("hidden", spec.hidden()));
  spec.activation(section.get<std::string>("activation", spec.activation()));
  spec.dropout(section.get<double>("dropout", spec.dropout()));
  spec.batch_norm(section.get<bool>("batch_norm", spec.batch_norm()));
  spec.channels(section.get<std::vector<int64_t>>("channels", spec.channels()));
  spec.kernel(section.get<int64_t>("kernel", spec.kernel()));
  spec.pool(section.get<std::string>("pool", spec.pool()));
  spec.depth(section.get<int64_t>("depth", spec.depth()));
  spec.width(section.get<int64_t>("width", spec.width()));
  spec.width_multiplier(section.get<double>("width_multiplier", spec.width_multiplier()));
  spec.embedding(section.get<int64_t>("embedding", spec.embedding()));
  spec.vocab(section.get<int64_t>("vocab", spec.vocab()));
  spec.pad_id(section.get<int64_t>("pad_id", spec.pad_id()));
  spec.layers(section.get<int64_t>("layers", spec.layers()));
  spec.heads(section.get<int64_t>("heads", spec.heads()));
  spec.ff(section.get<int64_t>("ff", spec.ff()));
  spec.norm(section.get<std::string>("norm", spec.norm()));
  spec.pooling(section.get<std::string>("pooling", spec.pooling()));
  section.finish();
  return spec;
}

namespace {

// `optimizer: adam` or `optimizer: {name: sgd, lr: 0.05, momentum: 0.9}`.
train::OptimizerOptions parse_optimizer(YamlSection& parent, train::OptimizerOptions options) {
  YAML::Node node = parent.node("optimizer");
  if (!node || node.IsNull()) return options;
  if (node.IsScalar()) return options.name(node.Scalar());
  YamlSection section(node, parent.file(), parent.path() + ".optimizer");
  options.name(section.get<std::string>("name", options.name()));
  options.lr(section.get<double>("lr", options.lr()));
  options.momentum(section.get<double>("momentum", options.momentum()));
  options.nesterov(section.get<bool>("nesterov", options.nesterov()));
  options.weight_decay(section.get<double>("weight_decay", options.weight_decay()));
  options.beta1(section.get<double>("beta1", options.beta1()));
  options.beta2(section.get<double>("beta2", options.beta2()));
  section.finish();
  return options;
}

// `augment: shift+flip` (words, each at its default strength) or `augment: {shift: 3, flip: true,
// cutout: 8, noise: 0.1, feature_dropout: 0.1, mixup: 0.2, cutmix: 1.0}`. The older key
// `shift_pixels` sets the shift of the word form.
data::AugmentOptions parse_augment(YamlSection& parent, data::AugmentOptions options) {
  int64_t shift_pixels = parent.get<int64_t>("shift_pixels", 2);
  YAML::Node node = parent.node("augment");
  if (!node || node.IsNull()) return options;
  std::string field = parent.where("augment");
  if (node.IsScalar()) {
    options = data::AugmentOptions();
    const std::vector<std::string> words = {"none", "shift", "flip", "cutout", "noise", "feature_dropout", "mixup", "cutmix"};
    for (const auto& word : split(node.Scalar(), '+')) {
      std::string w = trim(word);
      if (w == "shift") options.shift(shift_pixels);
      else if (w == "flip") options.flip(true);
      else if (w == "cutout") options.cutout(8);
      else if (w == "noise") options.noise(0.1);
      else if (w == "feature_dropout") options.feature_dropout(0.1);
      else if (w == "mixup") options.mixup(0.2);
      else if (w == "cutmix") options.cutmix(1.0);
      else if (w != "none") fail("{}: {} is not one of {} (joined with +), or a map of them", field, quote(w), join(words, ", "));
    }
    return options;
  }
  YamlSection section(node, parent.file(), parent.path() + ".augment");
  options.shift(section.get<int64_t>("shift", options.shift()));
  options.flip(section.get<bool>("flip", options.flip()));
  options.cutout(section.get<int64_t>("cutout", options.cutout()));
  options.noise(section.get<double>("noise", options.noise()));
  options.feature_dropout(section.get<double>("feature_dropout", options.feature_dropout()));
  options.mixup(section.get<double>("mixup", options.mixup()));
  options.cutmix(section.get<double>("cutmix", options.cutmix()));
  section.finish();
  try {
    data::validate(options, {}, parent.path() + ".augment");
  } catch (const Error&) {
    rethrow_with_context(section.file());
  }
  return options;
}

train::ScheduleOptions parse_schedule(YamlSection& parent, train::ScheduleOptions options) {
  YAML::Node node = parent.node("schedule");
  if (!node || node.IsNull()) return options;
  if (node.IsScalar()) return options.name(node.Scalar());
  YamlSection section(node, parent.file(), parent.path() + ".schedule");
  options.name(section.get<std::string>("name", options.name()));
  options.warmup_fraction(section.get<double>("warmup_fraction", options.warmup_fraction()));
  options.step_epochs(section.get<int64_t>("step_epochs", options.step_epochs()));
  options.gamma(section.get<double>("gamma", options.gamma()));
  options.onecycle_peak_fraction(section.get<double>("peak_fraction", options.onecycle_peak_fraction()));
  options.min_lr_fraction(section.get<double>("min_lr_fraction", options.min_lr_fraction()));
  section.finish();
  return options;
}

std::vector<losses::LossTermOptions> parse_losses(YamlSection& parent, const std::string& key) {
  std::vector<losses::LossTermOptions> terms;
  for (auto& item : parent.list(key)) {
    losses::LossTermOptions t(item.require<std::string>("kind"));
    t.weight(item.get<double>("weight", t.weight()));
    // The kinds declare their options (losses::LossOption); a key no kind declares is left to
    // finish(), which names it with a suggestion.
    if (item.raw().IsMap()) {
      for (const auto& pair : item.raw()) {
        if (!pair.first.IsScalar()) continue;  // finish() names it
        std::string key = pair.first.Scalar();
        const losses::LossOption* option = losses::find_loss_option(key);
        if (!option) continue;
        if (!item.has(key)) item.get<std::string>(key, "");  // null: the default (and the key is read)
        else if (option->is_word()) t.set(key, item.require<std::string>(key));
        else t.set(key, item.require<double>(key));
      }
    }
    item.finish();
    terms.push_back(t);
  }
  return terms;
}

std::string dump(const YAML::Node& node) {
  YAML::Emitter out;
  out << node;
  return out.c_str();
}

}  // namespace

train::TrainOptions parse_train_options(YamlSection& section, train::TrainOptions options) {
  options.epochs(section.get<int64_t>("epochs", options.epochs()));
  options.steps(section.get<int64_t>("steps", options.steps()));
  options.batch_size(section.get<int64_t>("batch_size", options.batch_size()));
  options.optimizer(parse_optimizer(section, options.optimizer()));
  options.schedule(parse_schedule(section, options.schedule()));
  options.grad_clip(section.get<double>("grad_clip", options.grad_clip()));
  options.divergence_retries(section.get<int64_t>("divergence_retries", options.divergence_retries()));
  options.precision(section.get<std::string>("precision", options.precision()));
  options.augment(parse_augment(section, options.augment()));
  options.patience(section.get<int64_t>("patience", options.patience()));
  return options;
}


namespace {

// search: dimensions as one value or [low, high] (numbers), a list of loss kinds, candidate students.
search::SearchOptions parse_search_section(YamlSection section) {
  search::SearchOptions options;
  std::vector<search::Dimension> dimensions;
  for (const auto& name : search::dimension_names()) {
    if (name == "student") continue;
    YAML::Node node = section.node(name);
    if (!node || node.IsNull()) continue;
    std::string field = section.where(name);
    if (name == "loss") {
      if (node.IsScalar() && node.Scalar() == "recipe") {
        options.recipe_losses(true);
        continue;
      }
      std::vector<std::string> kinds;
      if (node.IsScalar()) kinds = {node.Scalar()};
      else if (node.IsSequence()) kinds = section.get<std::vector<std::string>>(name, {});
      else fail("{}: expected a loss kind, a list of them, or recipe", field);
      dimensions.push_back(search::choice_dimension(name, kinds, field));
      continue;
    }
    std::vector<double> values;
    if (node.IsScalar()) values = {section.get<double>(name, 0.0)};
    else if (node.IsSequence() && node.size() == 2) values = section.get<std::vector<double>>(name, {});
    else fail("{}: expected a number or a range [low, high]", field);
    dimensions.push_back(search::numeric_dimension(name, values.front(), values.back(), field));
  }
  options.dimensions(dimensions);
  std::vector<std::string> students;
  for (auto& item : section.list("students")) {
    parse_zoo_spec(item);  // refuses unknown keys and bad values with the file and line
    YAML::Emitter flow;
    flow << YAML::Flow << item.raw();
    students.push_back(flow.c_str());
  }
  options.students(students);
  options.epochs(section.get<int64_t>("epochs", options.epochs()));
  options.min_epochs(section.get<int64_t>("min_epochs", options.min_epochs()));
  options.eta(section.get<int64_t>("eta", options.eta()));
  options.startup_trials(section.get<int64_t>("startup_trials", options.startup_trials()));
  options.front(section.get<std::string>("front", options.front()));
  section.finish();
  try {
    search::validate(options);
  } catch (const Error&) {
    rethrow_with_context(section.file());
  }
  return options;
}

}  // namespace

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_recipe(read_file(path), path, fs::path(path).parent_path().string(), overrides);
}

Recipe parse_recipe(const std::string& yaml, const std::string& path, const std::string& base_folder,
                    const std::vector<std::string>& overrides) {
  Recipe recipe;
  recipe.file = path;
  recipe.root = parse_yaml(yaml, path);
  for (const auto& assignment : overrides) apply_override(recipe.root, assignment);

  YamlSection root(recipe.root, path, "");
  recipe.task = parse_task(root.get<std::string>("task", "classification"), root.where("task"));
  recipe.seed = root.get<uint64_t>("seed", 0);
  recipe.data = parse_data_section(root.section("data"), recipe.task, recipe.seed, base_folder);
  flow::RunSpec& run = recipe.run;
  run.task = recipe.task;
  run.seed = recipe.seed;
  run.data = recipe.data;

  YamlSection teacher = root.section("teacher");
  if (!teacher.defined()) fail("{}: teacher: section is missing (path: a model file, or model: a zoo spec)", path);
  // One model file, or a list of them: an ensemble whose outputs are combined.
  YAML::Node teacher_path = teacher.node("path");
  std::vector<std::string> paths;
  if (teacher_path && teacher_path.IsSequence()) {
    paths = teacher.get<std::vector<std::string>>("path", {});
    if (paths.empty()) fail("{}: an empty list; give a model file or a list of them", teacher.where("path"));
  } else if (teacher_path && !teacher_path.IsNull()) {
    paths = {teacher.get<std::string>("path", "")};
  }
  for (const auto& p : paths) run.teacher.paths.push_back(resolve_path(p, base_folder));
  std::string combine = teacher.get<std::string>("combine", recipe.task == Task::regression ? "logits" : "probabilities");
  run.teacher.combine = models::parse_ensemble_combine(combine, teacher.where("combine"));
  if (recipe.task == Task::regression && run.teacher.combine != models::EnsembleCombine::logits) {
    fail("{}: a regression ensemble averages the outputs; combine: {} is for classification", teacher.where("combine"),
         combine);
  }
  run.teacher.members = teacher.get<int64_t>("members", 1);
  if (run.teacher.members < 1) fail("{}: {} is not a number of teachers (1 or more)", teacher.where("members"), run.teacher.members);
  if (run.teacher.members > 1 && !run.teacher.paths.empty()) {
    fail("{}: members trains an ensemble from model:; for files, list them in path:", teacher.where("members"));
  }
  run.teacher.weights = teacher.get<std::vector<double>>("weights", {});
  if (!run.teacher.weights.empty()) {
    size_t count = run.teacher.paths.empty() ? static_cast<size_t>(run.teacher.members) : run.teacher.paths.size();
    if (run.teacher.weights.size() != count) {
      fail("{}: {} weights for {} teachers; give one per teacher", teacher.where("weights"), run.teacher.weights.size(),
           count);
    }
    for (double w : run.teacher.weights) {
      if (!(w > 0) || !std::isfinite(w)) fail("{}: {} is not a positive weight", teacher.where("weights"), w);
    }
  }
  run.teacher.output = teacher.get<std::string>("output", "");
  run.teacher.adapt.input(teacher.get<std::string>("input", "auto"))
      .outputs(teacher.get<std::string>("outputs", "auto"));
  try {
    teacher::validate(run.teacher.adapt);
  } catch (const Error&) {
    rethrow_with_context(path);
  }
  if (teacher.has("model")) run.teacher.model = parse_zoo_spec(teacher.section("model"));
  if (run.teacher.model && !run.teacher.paths.empty()) fail("{}: give path or model, not both", teacher.where("model"));
  // classes: one entry per class of the data: a teacher output (index or class name) or a list of them.
  YAML::Node classes = teacher.node("classes");
  if (classes && !classes.IsNull()) {
    if (!classes.IsSequence() && !(classes.IsScalar() && classes.Scalar() == "learned")) {
      fail("{}: expected a list, one entry per class of the data, or learned", teacher.where("classes"));
    }
    if (run.teacher.paths.empty()) {
      fail("{}: maps a loaded teacher's classes (teacher.path); a teacher trained here has the data's",
           teacher.where("classes"));
    }
    run.teacher.learned_classes = classes.IsScalar();
    for (size_t c = 0; classes.IsSequence() && c < classes.size(); ++c) {
      std::vector<std::string> group;
      const YAML::Node& entry = classes[c];
      if (entry.IsScalar()) group.push_back(entry.Scalar());
      for (size_t i = 0; entry.IsSequence() && i < entry.size(); ++i) {
        if (entry[i].IsScalar()) group.push_back(entry[i].Scalar());
      }
      if (group.empty() || (entry.IsSequence() && group.size() != entry.size())) {
        fail("{}[{}]: expected a teacher output (index or class name) or a list of them", teacher.where("classes"), c);
      }
      run.teacher.classes.push_back(group);
    }
  }
  YamlSection teacher_train = teacher.section("train");
  run.teacher.train = parse_train_options(teacher_train, train::TrainOptions().schedule(train::ScheduleOptions()));
  teacher_train.finish();
  teacher.finish();

  YamlSection student = root.section("student");
  if (!student.defined()) fail("{}: student: section is missing (model: a zoo spec, or path: a TorchScript student)", path);
  if (student.has("model")) run.student.model = parse_zoo_spec(student.section("model"));
  run.student.path = resolve_path(student.get<std::string>("path", ""), base_folder);
  if (run.student.model && !run.student.path.empty()) fail("{}: give path or model, not both", student.where("model"));
  // init: random | teacher (leading slices), or {from: teacher, units: leading | importance | variance,
  // every: k, layers: {student layer: teacher layer}}.
  YAML::Node init = student.node("init");
  if (init && init.IsMap()) {
    YamlSection section(init, student.file(), student.path() + ".init");
    run.student.init = section.get<std::string>("from", "teacher");
    auto& options = run.student.init_options;
    options.units = section.get<std::string>("units", options.units);
    options.every = section.get<int64_t>("every", options.every);
    if (options.every < 1) fail("{}: {} is not a layer step (1 or more)", section.where("every"), options.every);
    YAML::Node layers = section.node("layers");
    if (layers && !layers.IsNull()) {
      if (!layers.IsMap()) fail("{}: expected a map of student layer: teacher layer, e.g. {{fc2: fc3}}", section.where("layers"));
      for (const auto& entry : layers) {
        if (!entry.second.IsScalar()) fail("{}.{}: expected a teacher layer's name", section.where("layers"), entry.first.Scalar());
        options.layer_map[entry.first.Scalar()] = entry.second.Scalar();
      }
    }
    section.finish();
  } else if (init && init.IsScalar()) {
    run.student.init = init.Scalar();
  } else if (init && !init.IsNull()) {
    fail("{}: expected random, teacher or a map such as {{from: teacher, units: importance}}", student.where("init"));
  }
  student.finish();

  YamlSection distill = root.section("distill");
  run.distill.losses = parse_losses(distill, "losses");
  if (run.distill.losses.empty()) {
    // Measured on Fashion-MNIST (2x32 MLP student): T=2 with equal weights beat T=4 at 0.9/0.1,
    // which fell below the baseline; small students want low temperatures (Hinton et al. 2015).
    run.distill.losses = {losses::LossTermOptions("kl").weight(0.5).temperature(2), losses::LossTermOptions("ce").weight(0.5)};
    if (recipe.task == Task::regression) {
      run.distill.losses = {losses::LossTermOptions("mse").target("teacher").weight(0.5),
                            losses::LossTermOptions("mse").target("labels").weight(0.5)};
    }
  }
  run.distill.baseline_losses = parse_losses(distill, "baseline_losses");
  run.distill.baseline = distill.get<bool>("baseline", true);
  run.distill.target = distill.get<std::string>("target", "");
  run.distill.train = parse_train_options(distill, train::TrainOptions());
  // stages: [{epochs, losses, optimizer, schedule}, ...], each continuing from the last.
  bool every_stage_sets_epochs = true;
  for (auto& item : distill.list("stages")) {
    every_stage_sets_epochs = every_stage_sets_epochs && item.has("epochs");
    flow::StageSpec stage;
    stage.losses = parse_losses(item, "losses");
    if (stage.losses.empty()) stage.losses = run.distill.losses;
    stage.train = run.distill.train;
    stage.train.epochs(item.get<int64_t>("epochs", run.distill.train.epochs()));
    if (stage.train.epochs() < 1) fail("{}: {} is not a number of epochs (1 or more)", item.where("epochs"), stage.train.epochs());
    stage.train.optimizer(parse_optimizer(item, run.distill.train.optimizer()));
    stage.train.schedule(parse_schedule(item, run.distill.train.schedule()));
    item.finish();
    run.distill.stages.push_back(stage);
  }
  // A distill.epochs the stages do not add up to would be ignored: `--set distill.epochs=20` on a
  // staged recipe must not train 60 epochs silently.
  if (distill.has("epochs") && !run.distill.stages.empty() && every_stage_sets_epochs) {
    int64_t total = 0;
    std::vector<std::string> parts;
    for (const auto& stage : run.distill.stages) {
      total += stage.train.epochs();
      parts.push_back(std::to_string(stage.train.epochs()));
    }
    if (total != run.distill.train.epochs()) {
      fail("{}: {} epochs, but distill.stages train {} ({}); change the stages' epochs, or drop them "
           "(--set distill.stages=null)", distill.where("epochs"), run.distill.train.epochs(), total, join(parts, " + "));
    }
  }
  YAML::Node views = distill.node("views");
  if (views && views.IsScalar() && views.Scalar() == "online") run.distill.views = 0;
  else if (views && views.IsScalar() && views.Scalar() == "auto") run.distill.views = -1;
  else if (views && !views.IsNull()) {
    run.distill.views = distill.get<int64_t>("views", -1);
    if (run.distill.views < 1) fail("{}: {} is not a positive number of views, online or auto", distill.where("views"), run.distill.views);
  }
  YamlSection bank = distill.section("bank");
  if (bank.defined()) {
    int64_t top_k = bank.get<int64_t>("top_k", 0);
    if (top_k < 0) fail("{}: {} is not a number of logits to keep (0 keeps them all)", bank.where("top_k"), top_k);
    double memory_mb = bank.get<double>("memory_mb", 4096.0);
    if (!(memory_mb >= 0)) fail("{}: {} is not a size in MB", bank.where("memory_mb"), memory_mb);
    if (top_k > 0 && recipe.task == Task::regression) {
      fail("{}: a regression teacher's outputs are not logits; keep them all (0)", bank.where("top_k"));
    }
    run.distill.bank.top_k(top_k).memory_limit(static_cast<int64_t>(memory_mb * 1e6));
  }
  bank.finish();
  distill.finish();

  YAML::Node exports = root.node("export");
  if (exports && exports.IsScalar()) run.exports = {exports.Scalar()};
  else if (exports && !exports.IsNull()) run.exports = root.get<std::vector<std::string>>("export", {});
  recipe.search = parse_search_section(root.section("search"));
  root.finish();

  run.recipe_text = dump(recipe.root) + "\n";
  YAML::Node teacher_part;
  for (const char* key : {"task", "seed", "data", "teacher"}) teacher_part[key] = YAML::Clone(recipe.root[key]);
  // How many members and how they are combined do not change what each member learns: a saved
  // member is reused whatever they say.
  if (teacher_part["teacher"].IsMap()) {
    for (const char* key : {"members", "combine", "weights"}) teacher_part["teacher"].remove(key);
  }
  run.teacher_fingerprint = dump(teacher_part);
  return recipe;
}

}  // namespace kd::recipe
